import { Effect, Option } from "effect"
import { recordRefund } from "../../payments/Payments.ts"
import { makeHandler } from "../Handler.ts"

// Telegram reports every refund, ours included. Ours is already recorded (a no-op here); one
// made without us (by Telegram's support) is recorded now so the balance matches the money.
export default makeHandler({
  name: "refunded-payment",
  order: 5,
  matches: (update) => update.message?.refunded_payment !== undefined,
  handle: Effect.fn("Handler.refundedPayment")(function*({ update, reply }) {
    const refunded = update.message?.refunded_payment
    if (refunded === undefined) return
    const balance = yield* recordRefund(refunded.telegram_payment_charge_id)
    if (Option.isNone(balance)) return
    yield* Effect.logWarning(`payment ${refunded.telegram_payment_charge_id} was refunded outside the bot; recorded`)
    yield* reply(`Your payment ${refunded.telegram_payment_charge_id} was refunded. Your balance: ${balance.value} credits.`)
  })
})
