import { Effect } from "effect"
import { recentPayments } from "../../payments/Payments.ts"
import { isCommand, makeHandler } from "../Handler.ts"

const STATUS_TEXT: Record<string, string> = {
  credited: "credited",
  needs_support: "waiting for support",
  refunded: "refunded"
}

// Telegram requires payment bots to answer /paysupport. The user's recent charge ids are what
// support needs, so they are listed here.
export default makeHandler({
  name: "paysupport",
  order: 10,
  matches: isCommand("paysupport"),
  handle: Effect.fn("Handler.paysupport")(function*({ update, reply }) {
    const from = update.message?.from
    const payments = from === undefined ? [] : yield* recentPayments(BigInt(from.id), 5)
    const lines = [
      "Payment support: reply here describing the problem and include the charge id; a person will answer.",
      "You can get your Stars back for a payment with /refund (your last one) or /refund <charge id>."
    ]
    if (payments.length > 0) {
      lines.push("", "Your recent payments:")
      for (const payment of payments) {
        lines.push(
          `• ${payment.total_amount} ⭐ ${payment.product ?? "(no order)"}: ${STATUS_TEXT[payment.status] ?? payment.status}, charge ${payment.telegram_payment_charge_id}`
        )
      }
    }
    yield* reply(lines.join("\n"))
  })
})
