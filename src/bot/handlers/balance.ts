import { Effect } from "effect"
import { balanceOf } from "../../payments/Payments.ts"
import { isCommand, makeHandler } from "../Handler.ts"

export default makeHandler({
  name: "balance",
  order: 10,
  matches: isCommand("balance"),
  handle: Effect.fn("Handler.balance")(function*({ update, reply }) {
    const from = update.message?.from
    if (from === undefined) return yield* reply("Send /balance in a private chat with me.")
    const credits = yield* balanceOf(BigInt(from.id))
    yield* reply(`Your balance: ${credits} credits.${credits === 0n ? " Send /buy to get some." : ""}`)
  })
})
