import { fallbackReply } from "../../../src/bot/handlers/Basics.ts"
import { makeHandler } from "../../../src/bot/Handler.ts"

/** The shipped fallback's reply, sent after commit: the outbox and its sender carry every reply. */
export const echoAfterCommit = makeHandler({
  name: "echo-after-commit",
  matches: (update) => update.message?.text !== undefined,
  handle: ({ afterCommit, update }) => afterCommit.reply(fallbackReply(update.message?.text ?? ""))
})
