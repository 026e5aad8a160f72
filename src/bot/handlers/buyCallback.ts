import { Effect } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { BUY_CALLBACK_PREFIX, describeProduct, findProduct, PRODUCTS, type Product } from "../../payments/Catalogue.ts"
import { createOrder } from "../../payments/Payments.ts"
import { type HandlerContext, type HandlerServices, makeHandler } from "../Handler.ts"

/** The catalogue as an inline keyboard, one product per row. */
export const productKeyboard = {
  inline_keyboard: PRODUCTS.map((product) => [{ text: describeProduct(product), callback_data: `${BUY_CALLBACK_PREFIX}${product.id}` }])
}

/** Creates the order and queues its invoice to the chat; both commit with the update or neither does. */
export const issueInvoice = (
  { call, update }: HandlerContext,
  order: { readonly userId: bigint; readonly chatId: bigint; readonly product: Product }
): Effect.Effect<void, SqlError, HandlerServices> =>
  Effect.gen(function*() {
    const issued = yield* createOrder({ ...order, updateId: update.update_id })
    yield* call("sendInvoice", { ...issued.invoice, chat_id: Number(order.chatId) }, `chat:${order.chatId}`)
  })

// A tap on a /buy button: stop the button's spinner, then send the invoice for that product.
export default makeHandler({
  name: "buy-callback",
  order: 10,
  matches: (update) => update.callback_query?.data?.startsWith(BUY_CALLBACK_PREFIX) === true,
  handle: Effect.fn("Handler.buyCallback")(function*(context) {
    const query = context.update.callback_query
    if (query === undefined) return
    const product = findProduct((query.data ?? "").slice(BUY_CALLBACK_PREFIX.length))
    const chat = query.message?.chat
    const notice = product === undefined
      ? "This product is no longer available. Send /buy to see what is."
      : chat === undefined
      ? "Open a private chat with me and send /buy there."
      : undefined
    yield* context.call("answerCallbackQuery", {
      callback_query_id: query.id,
      ...(notice === undefined ? {} : { text: notice, show_alert: true })
    })
    if (product === undefined || chat === undefined) return
    yield* issueInvoice(context, { userId: BigInt(query.from.id), chatId: BigInt(chat.id), product })
  })
})
