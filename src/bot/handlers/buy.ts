import { Effect } from "effect"
import { findProduct } from "../../payments/Catalogue.ts"
import { commandArgument, isCommand, makeHandler } from "../Handler.ts"
import { issueInvoice, productKeyboard } from "./buyCallback.ts"

// `/buy credits_100` sends the invoice at once; `/buy` alone offers the catalogue as buttons.
export default makeHandler({
  name: "buy",
  order: 10,
  matches: isCommand("buy"),
  handle: Effect.fn("Handler.buy")(function*(context) {
    const { update, reply } = context
    const message = update.message
    if (message?.from === undefined) return yield* reply("Payments work in a private chat with me: send /buy there.")
    const argument = commandArgument(update)
    if (argument === "") return yield* reply("What would you like to buy?", { reply_markup: productKeyboard })
    const product = findProduct(argument)
    if (product === undefined) {
      return yield* reply(`I don't sell “${argument.slice(0, 64)}”. Choose one of these:`, { reply_markup: productKeyboard })
    }
    yield* issueInvoice(context, { userId: BigInt(message.from.id), chatId: BigInt(message.chat.id), product })
  })
})
