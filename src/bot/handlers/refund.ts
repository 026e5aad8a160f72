import { Effect } from "effect"
import { refund } from "../../payments/Payments.ts"
import { commandArgument, HandlerFailure, isCommand, makeHandler } from "../Handler.ts"

// `/refund` (the last refundable payment) or `/refund <charge id>`. Telegram refunds first, by a
// direct call; the refund is recorded only if it succeeded (see Payments.refund).
export default makeHandler({
  name: "refund",
  order: 10,
  matches: isCommand("refund"),
  handle: Effect.fn("Handler.refund")(function*({ update, reply }) {
    const from = update.message?.from
    if (from === undefined) return yield* reply("Send /refund in a private chat with me.")
    const argument = commandArgument(update)
    const outcome = yield* refund(BigInt(from.id), argument === "" ? undefined : argument).pipe(
      // Telegram unreachable: roll back and retry the update; nothing was recorded.
      Effect.catchTag("BotApiUnavailable", (error) => Effect.fail(new HandlerFailure({ reason: error.message })))
    )
    switch (outcome._tag) {
      case "Refunded": {
        const { payment } = outcome
        return yield* reply([
          `Refunded ${payment.total_amount} ⭐ (charge ${payment.telegram_payment_charge_id}).`,
          payment.credits > 0 ? `${payment.credits} credits were removed. Your balance: ${outcome.balance} credits.` : `Your balance: ${outcome.balance} credits.`
        ].join("\n"))
      }
      case "NothingToRefund":
        return yield* reply("You have no payment that can be refunded.")
      case "NotFound":
        return yield* reply(`I found no payment of yours with charge id ${outcome.chargeId.slice(0, 128)}.`)
      case "AlreadyRefunded":
        return yield* reply(`The payment ${outcome.chargeId} has already been refunded.`)
      case "CreditsUsed":
        return yield* reply(
          `This payment added ${outcome.payment.credits} credits but your balance is ${outcome.balance}: ` +
            "credits already used cannot be refunded. Send /paysupport if you need help."
        )
      case "Refused":
        return yield* reply(
          `Telegram did not refund this payment (${outcome.description}). Nothing was changed; send /paysupport if you need help.`
        )
    }
  })
})
