import { Effect } from "effect"
import { isCommand, makeHandler } from "../Handler.ts"

export const HELP_TEXT = [
  "/start - say hello and register",
  "/help - this list",
  "/buy - buy credits with Telegram Stars",
  "/balance - your credits",
  "/refund - get the Stars of your last payment back",
  "/paysupport - help with a payment",
  "/terms - terms of purchase"
].join("\n")

export default makeHandler({
  name: "help",
  order: 10,
  matches: isCommand("help"),
  handle: Effect.fn("Handler.help")(function*({ reply }) {
    yield* reply(`Here is what I understand:\n${HELP_TEXT}`)
  })
})
