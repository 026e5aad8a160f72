import { Effect } from "effect"
import { checkPreCheckout } from "../../payments/Payments.ts"
import { BotApi } from "../../telegram/BotApi.ts"
import { HandlerFailure, makeHandler } from "../Handler.ts"

/**
 * Telegram cancels the payment unless this is answered within 10 s of the user's tap, so the
 * answer is a direct Bot API call, not an outbox row that could wait behind the chat's other
 * messages (and the inbox claims these updates first). A retry after a failed commit answers the
 * same query again; Telegram refuses that with 400, which is logged, not retried.
 */
export default makeHandler({
  name: "pre-checkout",
  order: 5,
  matches: (update) => update.pre_checkout_query !== undefined,
  handle: Effect.fn("Handler.preCheckout")(function*({ update }) {
    const query = update.pre_checkout_query
    if (query === undefined) return
    const botApi = yield* BotApi
    const verdict = yield* checkPreCheckout(query)
    yield* Effect.annotateCurrentSpan({ "steadfast.pre_checkout": verdict.ok ? "ok" : verdict.reason })
    if (!verdict.ok) {
      yield* Effect.logInfo(`pre-checkout ${query.id} of user ${query.from.id} declined: ${verdict.reason}`)
    }
    yield* botApi.call(
      "answerPreCheckoutQuery",
      verdict.ok
        ? { pre_checkout_query_id: query.id, ok: true }
        : { pre_checkout_query_id: query.id, ok: false, error_message: verdict.message }
    ).pipe(
      Effect.catchTags({
        BotApiRejected: (error) => Effect.logWarning(`pre-checkout ${query.id} could not be answered: ${error.message}`),
        ChatBlocked: (error) => Effect.logWarning(`pre-checkout ${query.id} could not be answered: ${error.message}`),
        BotApiUnavailable: (error) => Effect.fail(new HandlerFailure({ reason: error.message }))
      })
    )
  })
})
