import { assert, describe, layer } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { AppConfig } from "../../src/Config.ts"
import { signOrderPayload } from "../../src/payments/InvoicePayload.ts"
import { testEnv } from "../support/TestApp.ts"
import {
  assertMoneyInvariants,
  execute,
  moneyOf,
  newShopper,
  nextChargeId,
  orderIdOf,
  orderState,
  paymentAppLayer,
  paymentState,
  termsOf
} from "./PaymentSupport.ts"

const INVALID = "This invoice is not valid. Send /buy to get a new one."
const MISMATCH = "The price of this invoice does not match the order. Send /buy to get a new one."

/** A payload the app itself would accept as genuine: signed with its key (derived from the test token). */
const genuinePayload = (orderId: bigint) =>
  AppConfig.pipe(
    Effect.map((config) => signOrderPayload(config.paymentSecret, orderId)),
    Effect.provide(AppConfig.layer),
    Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv("postgres://u:p@127.0.0.1:1/db", "http://127.0.0.1:1")))),
    Effect.orDie
  )

/** Flips the last character of the payload's MAC. */
const flipLast = (payload: string) => payload.slice(0, -1) + (payload.endsWith("A") ? "B" : "A")

describe("pre-checkout validation", () => {
  layer(paymentAppLayer("payments_checkout"), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("forged and tampered payloads are declined and change nothing", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const cheap = yield* shopper.buy("credits_100")
        const dear = yield* shopper.buy("credits_500")
        const cases = [
          // Made up from scratch, in our format and not.
          { ...termsOf(cheap), payload: "o1.AAAAAAAAAAAAAAAAAAAAAA" },
          { ...termsOf(cheap), payload: "credits_100" },
          { ...termsOf(cheap), payload: "" },
          // A real payload with its MAC altered, and one pointed at the other order.
          { ...termsOf(cheap), payload: flipLast(cheap.payload) },
          { ...termsOf(cheap), payload: `o${orderIdOf(dear.payload)}.${cheap.payload.split(".")[1]}` },
          // The expensive order's id with the cheap order's MAC, at the cheap price.
          { ...termsOf(dear), amount: 50, payload: `o${orderIdOf(dear.payload)}.${cheap.payload.split(".")[1]}` }
        ]
        for (const terms of cases) {
          assert.deepStrictEqual(yield* shopper.preCheckout(terms), { ok: false, error_message: INVALID }, terms.payload)
        }
        assert.strictEqual((yield* orderState(orderIdOf(cheap.payload)))?.status, "pending")
        assert.strictEqual((yield* orderState(orderIdOf(dear.payload)))?.status, "pending")
        // The genuine invoices are still good.
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(cheap)), { ok: true })
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(dear)), { ok: true })
        yield* assertMoneyInvariants
      }))

    it.effect("a genuinely signed payload for an order that does not exist is declined, and recorded for support if paid", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const payload = yield* genuinePayload(987_654_321n)
        assert.deepStrictEqual(yield* shopper.preCheckout({ payload, amount: 50, currency: "XTR" }), { ok: false, error_message: INVALID })
        const chargeId = nextChargeId()
        yield* shopper.pay({ payload, amount: 50, currency: "XTR", chargeId })
        assert.deepInclude(yield* paymentState(chargeId), {
          status: "needs_support",
          credits: 0,
          support_reason: "order 987654321 does not exist",
          order_id: null
        })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("a wrong amount or currency is declined", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_500")
        assert.deepStrictEqual(yield* shopper.preCheckout({ ...termsOf(invoice), amount: 1 }), { ok: false, error_message: MISMATCH })
        assert.deepStrictEqual(yield* shopper.preCheckout({ ...termsOf(invoice), amount: 201 }), { ok: false, error_message: MISMATCH })
        assert.deepStrictEqual(yield* shopper.preCheckout({ ...termsOf(invoice), currency: "USD" }), { ok: false, error_message: MISMATCH })
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), { ok: true })
        yield* assertMoneyInvariants
      }))

    it.effect("someone else's order is declined", () =>
      Effect.gen(function*() {
        const owner = yield* newShopper
        const other = yield* newShopper
        const invoice = yield* owner.buy("credits_100")
        assert.deepStrictEqual(yield* other.preCheckout(termsOf(invoice)), {
          ok: false,
          error_message: "This invoice was issued to someone else. Send /buy to get your own."
        })
        assert.deepStrictEqual(yield* owner.preCheckout(termsOf(invoice)), { ok: true })
        yield* assertMoneyInvariants
      }))

    it.effect("an expired order is declined", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        yield* execute("UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1", [orderIdOf(invoice.payload)])
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), {
          ok: false,
          error_message: "This invoice has expired. Send /buy to get a new one."
        })
        yield* assertMoneyInvariants
      }))

    it.effect("an order already paid is declined", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        yield* shopper.pay({ ...termsOf(invoice), chargeId: nextChargeId() })
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), {
          ok: false,
          error_message: "This order has already been paid. Send /buy to buy again."
        })
        yield* assertMoneyInvariants
      }))
  })
})

describe("payments that match no open order are recorded and flagged, never dropped", () => {
  layer(paymentAppLayer("payments_flagged"), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("a payment with a forged payload is recorded for support, credits nothing, and the user is told", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const chargeId = nextChargeId()
        yield* shopper.pay({ payload: "o1.AAAAAAAAAAAAAAAAAAAAAA", amount: 50, currency: "XTR", chargeId })
        assert.deepStrictEqual(yield* paymentState(chargeId), {
          status: "needs_support",
          credits: 0,
          support_reason: "invoice payload not signed by us",
          order_id: null,
          order_status: null,
          order_charge: null
        })
        const [notice] = yield* shopper.awaitMessages(1)
        assert.include(notice, "does not match an open order, so no credits were added")
        assert.include(notice, `/refund ${chargeId}`)
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 })

        // The way out: refunding it returns the Stars and debits nothing.
        assert.include(yield* shopper.say(`/refund ${chargeId}`), "Refunded 50 ⭐")
        assert.deepInclude(yield* paymentState(chargeId), { status: "refunded" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("a payment for an order that had expired is recorded for support, the order left pending", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        const orderId = orderIdOf(invoice.payload)
        yield* execute("UPDATE orders SET expires_at = now() - interval '1 hour' WHERE id = $1", [orderId])
        const chargeId = nextChargeId()
        yield* shopper.pay({ ...termsOf(invoice), chargeId })
        assert.deepStrictEqual(yield* paymentState(chargeId), {
          status: "needs_support",
          credits: 0,
          support_reason: `order ${orderId} had expired when it was paid`,
          order_id: orderId,
          order_status: "pending",
          order_charge: null
        })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("expiry is judged at Telegram's payment time: a backlogged payment made in time is credited", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        const orderId = orderIdOf(invoice.payload)
        // Processed an hour after expiry, but Telegram dated the payment before it.
        yield* execute("UPDATE orders SET expires_at = now() - interval '1 hour' WHERE id = $1", [orderId])
        const chargeId = nextChargeId()
        yield* shopper.pay({ ...termsOf(invoice), chargeId, date: Math.floor(Date.now() / 1000) - 2 * 3600 })
        assert.deepInclude(yield* paymentState(chargeId), { status: "credited", credits: 100, order_status: "paid" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
        yield* assertMoneyInvariants
      }))

    it.effect("a payment for someone else's order, or of the wrong amount or currency, is recorded for support", () =>
      Effect.gen(function*() {
        const owner = yield* newShopper
        const payer = yield* newShopper
        const invoice = yield* owner.buy("credits_100")
        const orderId = orderIdOf(invoice.payload)
        const cases = [
          { who: payer, terms: termsOf(invoice), reason: `order ${orderId} belongs to user ${owner.userId}` },
          { who: owner, terms: { ...termsOf(invoice), amount: 49 }, reason: "paid 49, order is for 50" },
          { who: owner, terms: { ...termsOf(invoice), currency: "EUR" }, reason: "paid in EUR, order is in XTR" }
        ]
        for (const { reason, terms, who } of cases) {
          const chargeId = nextChargeId()
          yield* who.pay({ ...terms, chargeId })
          assert.deepInclude(yield* paymentState(chargeId), { status: "needs_support", credits: 0, support_reason: reason })
        }
        assert.strictEqual((yield* orderState(orderId))?.status, "pending")
        // The order itself is still payable by its owner, once.
        const chargeId = nextChargeId()
        yield* owner.pay({ ...termsOf(invoice), chargeId })
        assert.deepInclude(yield* paymentState(chargeId), { status: "credited", credits: 100 })
        // A second, different charge for the now paid order is money too: recorded, flagged.
        const second = nextChargeId()
        yield* owner.pay({ ...termsOf(invoice), chargeId: second })
        assert.deepInclude(yield* paymentState(second), { status: "needs_support", support_reason: `order ${orderId} was already paid` })
        assert.deepStrictEqual(yield* moneyOf(owner.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 4 })
        assert.deepStrictEqual(yield* moneyOf(payer.userId), { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 })
        yield* assertMoneyInvariants
      }))
  })
})
