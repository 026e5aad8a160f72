import { Effect } from "effect"
import { recordSuccessfulPayment } from "../../payments/Payments.ts"
import { makeHandler } from "../Handler.ts"

// The money has been taken when this arrives: record it (exactly once), credit it when it
// matches its order, and send the receipt through the outbox — a receipt that cannot be
// delivered (the user blocked the bot) fails on its own, after the credit has committed.
export default makeHandler({
  name: "successful-payment",
  order: 5,
  matches: (update) => update.message?.successful_payment !== undefined,
  handle: Effect.fn("Handler.successfulPayment")(function*({ update, reply }) {
    const message = update.message
    const payment = message?.successful_payment
    if (message === undefined || payment === undefined) return
    const outcome = yield* recordSuccessfulPayment({
      userId: BigInt(message.from?.id ?? message.chat.id),
      chatId: BigInt(message.chat.id),
      updateId: update.update_id,
      paidAt: message.date,
      payment
    })
    const charge = payment.telegram_payment_charge_id
    switch (outcome._tag) {
      case "Credited":
        return yield* reply([
          `Thank you! Payment of ${payment.total_amount} ⭐ received: ${outcome.credits} credits added.`,
          `Your balance: ${outcome.balance} credits.`,
          `Receipt: order #${outcome.orderId}, charge ${charge}. Send /refund to get your Stars back.`
        ].join("\n"))
      case "Flagged":
        return yield* reply([
          `We received your payment of ${payment.total_amount} ⭐, but it does not match an open order, so no credits were added.`,
          `It is recorded under charge ${charge} and our support will sort it out; send /paysupport,`,
          `or /refund ${charge} to get your Stars back.`
        ].join("\n"))
      case "Duplicate":
        return yield* Effect.logInfo(`payment ${charge} delivered again (update ${update.update_id}); already ${outcome.status}`)
    }
  })
})
