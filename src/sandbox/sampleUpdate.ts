import type { Update } from "grammy/types"

export interface SampleUpdateOptions {
  readonly updateId?: number
  readonly messageId?: number
  readonly chatId?: number
  readonly text?: string
  /** Seconds since the epoch; a fixed instant by default so the builder stays pure. */
  readonly date?: number
  readonly firstName?: string
  readonly username?: string
  readonly languageCode?: string
}

export type SampleUpdate = Update & { readonly message: NonNullable<Update["message"]> }

/** A private-chat text `message` update shaped like the ones Telegram posts to a webhook. */
export const sampleUpdate = (options: SampleUpdateOptions = {}): SampleUpdate => {
  const updateId = options.updateId ?? 1
  const chatId = options.chatId ?? 42
  const text = options.text ?? "/start"
  const firstName = options.firstName ?? "Ada"
  const username = options.username ?? "ada_sandbox"
  // Telegram marks only a leading command; its length runs to the first whitespace, "@botname" included.
  const command = text.startsWith("/") ? /^\/\S*/.exec(text)?.[0] : undefined
  return {
    update_id: updateId,
    message: {
      message_id: options.messageId ?? updateId,
      from: {
        id: chatId,
        is_bot: false,
        first_name: firstName,
        username,
        language_code: options.languageCode ?? "en"
      },
      chat: { id: chatId, type: "private", first_name: firstName, username },
      date: options.date ?? 1767225600,
      text,
      ...(command !== undefined ? { entities: [{ type: "bot_command", offset: 0, length: command.length }] } : {})
    }
  }
}
