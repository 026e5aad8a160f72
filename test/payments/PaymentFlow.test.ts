import { assert, describe, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import {
  assertMoneyInvariants,
  awaitFinished,
  callbackUpdate,
  invoicesTo,
  messagesTo,
  moneyOf,
  newShopper,
  nextChargeId,
  orderIdOf,
  orderState,
  paymentAppLayer,
  paymentState,
  refundedPaymentUpdate,
  termsOf,
  buyAndPay
} from "./PaymentSupport.ts"
import { eventually } from "../support/Eventually.ts"
import { AppDatabase } from "../support/TestDatabase.ts"

const OutboxRow = Schema.Struct({ method: Schema.String, status: Schema.String, last_error: Schema.NullOr(Schema.String) })

describe("payments end to end", () => {
  layer(paymentAppLayer("payments_flow"), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("/buy → pre-checkout → successful_payment → /balance → /refund: credited once, then refunded and debited", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper

        // /buy with a product: a pending order and a Stars invoice whose payload is signed.
        const invoice = yield* shopper.buy("credits_100")
        assert.deepInclude(invoice, { chat_id: shopper.userId, currency: "XTR", provider_token: "", title: "100 credits" })
        assert.deepStrictEqual(invoice.prices, [{ label: "100 credits", amount: 50 }])
        assert.match(invoice.payload, /^o\d+\.[A-Za-z0-9_-]{22}$/)
        const orderId = orderIdOf(invoice.payload)
        assert.deepInclude(yield* orderState(orderId), {
          user_id: String(shopper.userId),
          product: "credits_100",
          credits: 100,
          amount: 50,
          currency: "XTR",
          status: "pending",
          charge: null,
          ttl_seconds: 1800
        })

        // Pre-checkout: approved, by a direct answer.
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), { ok: true })

        // successful_payment: order paid, payment recorded, ledger entry, balance, receipt.
        const chargeId = nextChargeId()
        yield* shopper.pay({ ...termsOf(invoice), chargeId })
        const [receipt] = yield* shopper.awaitMessages(1)
        assert.include(receipt, "100 credits added")
        assert.include(receipt, "Your balance: 100 credits")
        assert.include(receipt, chargeId)
        assert.deepStrictEqual(yield* paymentState(chargeId), {
          status: "credited",
          credits: 100,
          support_reason: null,
          order_id: orderId,
          order_status: "paid",
          order_charge: chargeId
        })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })

        assert.strictEqual(yield* shopper.say("/balance"), "Your balance: 100 credits.")

        // /refund: Telegram first, then refunded + debited together.
        const refunded = yield* shopper.say("/refund")
        assert.include(refunded, `Refunded 50 ⭐ (charge ${chargeId})`)
        assert.include(refunded, "Your balance: 0 credits")
        const refundCall = (yield* standIn.calls).find((call) =>
          call.method === "refundStarPayment" && call.params["telegram_payment_charge_id"] === chargeId
        )
        assert.deepStrictEqual(refundCall?.params, { user_id: shopper.userId, telegram_payment_charge_id: chargeId })
        assert.deepInclude(yield* paymentState(chargeId), { status: "refunded", order_status: "refunded" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 2, payments: 1 })

        // Telegram then reports the refund itself: already recorded, nothing changes, no message.
        const report = refundedPaymentUpdate(shopper.userId, { ...termsOf(invoice), chargeId })
        yield* shopper.post(report)
        yield* awaitFinished(report.update_id)
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 2, payments: 1 })

        assert.strictEqual(yield* shopper.say("/refund"), "You have no payment that can be refunded.")
        assert.strictEqual(yield* shopper.say("/balance"), "Your balance: 0 credits. Send /buy to get some.")
        assert.strictEqual(messagesTo(yield* standIn.calls, shopper.userId).length, 5)
        yield* assertMoneyInvariants
      }))

    it.effect("a refunded_payment naming another user's charge id changes nothing; the payer's own is recorded", () =>
      Effect.gen(function*() {
        const payer = yield* newShopper
        const stranger = yield* newShopper
        const invoice = yield* payer.buy("credits_100")
        assert.deepStrictEqual(yield* payer.preCheckout(termsOf(invoice)), { ok: true })
        const chargeId = nextChargeId()
        yield* payer.pay({ ...termsOf(invoice), chargeId })
        yield* payer.awaitMessages(1)

        const forged = refundedPaymentUpdate(stranger.userId, { ...termsOf(invoice), chargeId })
        yield* stranger.post(forged)
        yield* awaitFinished(forged.update_id)
        assert.deepInclude(yield* paymentState(chargeId), { status: "credited" })
        assert.deepStrictEqual(yield* moneyOf(payer.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })

        const own = refundedPaymentUpdate(payer.userId, { ...termsOf(invoice), chargeId })
        yield* payer.post(own)
        yield* awaitFinished(own.update_id)
        assert.deepInclude(yield* paymentState(chargeId), { status: "refunded" })
        assert.deepStrictEqual(yield* moneyOf(payer.userId), { balance: 0, ledger_sum: 0, ledger_entries: 2, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("/buy alone offers the catalogue as buttons; a tap answers the callback and sends that product's invoice", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        yield* shopper.say("/buy")
        const offer = (yield* standIn.calls).filter((call) => call.method === "sendMessage" && call.params["chat_id"] === shopper.userId)[0]
        assert.strictEqual(offer?.params["text"], "What would you like to buy?")
        assert.deepStrictEqual(offer?.params["reply_markup"], {
          inline_keyboard: [
            [{ text: "100 credits for 50 ⭐", callback_data: "buy:credits_100" }],
            [{ text: "500 credits for 200 ⭐", callback_data: "buy:credits_500" }]
          ]
        })

        const tap = callbackUpdate(shopper.userId, "buy:credits_500")
        yield* shopper.post(tap)
        const calls = yield* Effect.orDie(standIn.awaitCalls((calls) => invoicesTo(calls, shopper.userId).length === 1, "15 seconds"))
        const queryId = tap.callback_query?.id
        const answered = calls.filter((call) => call.method === "answerCallbackQuery" && call.params["callback_query_id"] === queryId)
        assert.deepStrictEqual(answered.map((call) => call.params), [{ callback_query_id: queryId }])
        const invoice = invoicesTo(calls, shopper.userId)[0]!
        assert.deepInclude(invoice.params, { currency: "XTR", title: "500 credits" })
        assert.deepStrictEqual(invoice.params["prices"], [{ label: "500 credits", amount: 200 }])
        // The spinner is stopped before the invoice arrives: both are the chat's calls, in order.
        assert.isBelow(calls.indexOf(answered[0]!), calls.indexOf(invoice))

        const unknown = yield* shopper.say("/buy diamonds")
        assert.strictEqual(unknown, "I don't sell “diamonds”. Choose one of these:")
        yield* assertMoneyInvariants
      }))

    it.effect("refundStarPayment answering 400: nothing changes and the user is told why; a later refund succeeds", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const { chargeId } = yield* buyAndPay(shopper, "credits_500")

        yield* standIn.script("refundStarPayment", [{
          status: 400,
          body: { ok: false, error_code: 400, description: "Bad Request: REFUND_PERIOD_EXPIRED" }
        }])
        const refused = yield* shopper.say(`/refund ${chargeId}`)
        assert.strictEqual(
          refused,
          "Telegram did not refund this payment (Bad Request: REFUND_PERIOD_EXPIRED). Nothing was changed; send /paysupport if you need help."
        )
        assert.deepInclude(yield* paymentState(chargeId), { status: "credited", order_status: "paid" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 500, ledger_sum: 500, ledger_entries: 1, payments: 1 })
        yield* assertMoneyInvariants

        assert.include(yield* shopper.say(`/refund ${chargeId}`), "Refunded 200 ⭐")
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 2, payments: 1 })
        assert.strictEqual(yield* shopper.say(`/refund ${chargeId}`), `The payment ${chargeId} has already been refunded.`)
        assert.strictEqual(yield* shopper.say("/refund stxNOPE"), "I found no payment of yours with charge id stxNOPE.")
        yield* assertMoneyInvariants
      }))

    it.effect("a refund Telegram already made (CHARGE_ALREADY_REFUNDED on a retried refund) is recorded once", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const { chargeId } = yield* buyAndPay(shopper, "credits_100")
        // What the retry of a refund whose transaction failed after Telegram's refund would see.
        yield* standIn.script("refundStarPayment", [{
          status: 400,
          body: { ok: false, error_code: 400, description: "Bad Request: CHARGE_ALREADY_REFUNDED" }
        }])
        assert.include(yield* shopper.say("/refund"), "Refunded 50 ⭐")
        assert.deepInclude(yield* paymentState(chargeId), { status: "refunded", order_status: "refunded" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 2, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("a user who blocked the bot: the receipt's 403 does not undo the credit; the outbox row is failed with the error", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const db = yield* AppDatabase
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), { ok: true })
        // Nothing else is queued, so the scripted 403 goes to this receipt.
        yield* eventually(
          "an idle outbox",
          db.rows(
            Schema.Struct({ open: Schema.Number }),
            "SELECT count(*)::int AS open FROM outbox WHERE status IN ('pending', 'sending')"
          ),
          (rows) => rows[0]?.open === 0
        )
        yield* standIn.script("sendMessage", [{
          status: 403,
          body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" }
        }])
        const chargeId = nextChargeId()
        const updateId = yield* shopper.pay({ ...termsOf(invoice), chargeId })
        yield* shopper.awaitMessages(1)
        const [receipt] = yield* eventually(
          "the receipt's outbox row failed",
          db.rows(OutboxRow, "SELECT method, status, last_error FROM outbox WHERE update_id = $1", [updateId]),
          (rows) => rows[0]?.status === "failed"
        )
        assert.strictEqual(receipt?.method, "sendMessage")
        assert.include(receipt?.last_error ?? "", "bot was blocked by the user")
        assert.deepInclude(yield* inboxDone(updateId), { status: "done" })
        assert.deepInclude(yield* paymentState(chargeId), { status: "credited", order_status: "paid" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("/paysupport lists the user's payments with their charge ids; /terms states the terms", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const { chargeId } = yield* buyAndPay(shopper, "credits_100")
        const support = yield* shopper.say("/paysupport")
        assert.include(support, "Payment support")
        assert.include(support, `• 50 ⭐ credits_100: credited, charge ${chargeId}`)
        const terms = yield* shopper.say("/terms")
        assert.include(terms, "Terms of purchase")
        assert.include(terms, "/refund")
        const help = yield* shopper.say("/help")
        for (const command of ["/buy", "/balance", "/refund", "/paysupport", "/terms"]) assert.include(help, command)
        yield* assertMoneyInvariants
      }))
  })
})

const inboxDone = (updateId: number) => awaitFinished(updateId)
