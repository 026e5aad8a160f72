// Update factories the tests share (the sandbox's own sampleUpdate makes message updates).
import type { Update } from "grammy/types"

/** A button press under the bot's message `messageId` in a private chat with `chatId`. */
export const callbackQueryUpdate = (options: {
  readonly updateId: number
  readonly chatId: number
  readonly messageId: number
  readonly data: string
  /** The text of the message the button is under. */
  readonly messageText: string
}): Update => ({
  update_id: options.updateId,
  callback_query: {
    id: `cb${options.updateId}`,
    from: { id: options.chatId, is_bot: false, first_name: "Ada" },
    chat_instance: `ci${options.chatId}`,
    data: options.data,
    message: {
      message_id: options.messageId,
      date: 1767225600,
      chat: { id: options.chatId, type: "private", first_name: "Ada" },
      from: { id: 123456789, is_bot: true, first_name: "Steadfast Sandbox", username: "steadfast_sandbox_bot" },
      text: options.messageText
    }
  }
})
