import { Effect } from "effect"
import { isCommand, makeHandler } from "../Handler.ts"

export const TERMS_TEXT = [
  "Terms of purchase",
  "• Credits are sold for Telegram Stars through Telegram; prices are shown on each invoice.",
  "• An invoice is valid for 30 minutes. Credits are added as soon as Telegram confirms the payment.",
  "• You can get the Stars back for a payment with /refund as long as its credits are unused.",
  "• If a payment was taken but no credits were added, it is kept on record: send /paysupport.",
  "• Credits have no cash value outside this bot."
].join("\n")

// Telegram requires payment bots to answer /terms.
export default makeHandler({
  name: "terms",
  order: 10,
  matches: isCommand("terms"),
  handle: Effect.fn("Handler.terms")(function*({ reply }) {
    yield* reply(TERMS_TEXT)
  })
})
