import type { Opts } from "grammy/types"
import { Duration, Effect, Option, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { AppConfig } from "../Config.ts"
import { decodeRows } from "../db/Rows.ts"
import { BotApi } from "../telegram/BotApi.ts"
import type { PreCheckoutQuery, SuccessfulPayment } from "../telegram/Update.ts"
import { CURRENCY, ORDER_TTL, type Product } from "./Catalogue.ts"
import { signOrderPayload, verifyOrderPayload } from "./InvoicePayload.ts"

// Every function here runs inside the caller's transaction (the update's, from the Dispatcher):
// `yield* SqlClient` is that transaction's connection, so their writes commit with the update or
// not at all. Row locks taken here (`FOR UPDATE`) are held until that commit.

/**
 * A payment is matched against its order's expiry by Telegram's timestamp of the payment, not
 * by when we process it (a backlog must not turn a paid order into an expired one), with a
 * margin for a payment confirmed just before expiry and completed just after.
 */
export const EXPIRY_GRACE = Duration.minutes(5)

const IdRow = Schema.Struct({ id: Schema.BigInt })
const decodeIds = decodeRows(IdRow)
const CreditsRow = Schema.Struct({ credits: Schema.BigInt })
const decodeCredits = decodeRows(CreditsRow)

// ---------------------------------------------------------------------------------------------
// Orders and invoices

export interface IssuedOrder {
  readonly orderId: bigint
  /** Parameters of `sendInvoice`, without `chat_id`. */
  readonly invoice: Omit<Opts<"sendInvoice">, "chat_id">
}

/** Creates a pending order for `product` and the matching invoice, whose payload is signed. */
export const createOrder = Effect.fn("Payments.createOrder")(function*(input: {
  readonly userId: bigint
  readonly chatId: bigint
  readonly product: Product
  readonly updateId: number
}) {
  const sql = yield* SqlClient
  const config = yield* AppConfig
  const { product } = input
  const rows = yield* sql`
    INSERT INTO orders (user_id, chat_id, product, credits, amount, currency, update_id, expires_at)
    VALUES (${input.userId}, ${input.chatId}, ${product.id}, ${product.credits}, ${product.amount}, ${CURRENCY},
            ${input.updateId}, now() + ${Duration.toMillis(ORDER_TTL)} * interval '1 millisecond')
    RETURNING id`.pipe(decodeIds)
  const orderId = rows[0]!.id
  yield* Effect.annotateCurrentSpan({ "steadfast.order_id": String(orderId), "steadfast.product": product.id })
  return {
    orderId,
    invoice: {
      title: product.title,
      description: product.description,
      payload: signOrderPayload(config.paymentSecret, orderId),
      // Stars: no payment provider, so an empty token, and a single price in XTR.
      provider_token: "",
      currency: CURRENCY,
      prices: [{ label: product.title, amount: product.amount }]
    }
  } satisfies IssuedOrder
})

// ---------------------------------------------------------------------------------------------
// Pre-checkout

export type PreCheckoutRejection =
  | "invalid_payload"
  | "unknown_order"
  | "not_yours"
  | "already_paid"
  | "refunded"
  | "expired"
  | "currency_mismatch"
  | "amount_mismatch"

export type PreCheckoutVerdict =
  | { readonly ok: true; readonly orderId: bigint }
  | { readonly ok: false; readonly reason: PreCheckoutRejection; readonly message: string }

/** What the user reads in Telegram's payment window when we decline (kept short: one line there). */
export const REJECTION_MESSAGES: Record<PreCheckoutRejection, string> = {
  invalid_payload: "This invoice is not valid. Send /buy to get a new one.",
  unknown_order: "This invoice is not valid. Send /buy to get a new one.",
  not_yours: "This invoice was issued to someone else. Send /buy to get your own.",
  already_paid: "This order has already been paid. Send /buy to buy again.",
  refunded: "This order was refunded. Send /buy to get a new invoice.",
  expired: "This invoice has expired. Send /buy to get a new one.",
  currency_mismatch: "The price of this invoice does not match the order. Send /buy to get a new one.",
  amount_mismatch: "The price of this invoice does not match the order. Send /buy to get a new one."
}

const reject = (reason: PreCheckoutRejection): PreCheckoutVerdict => ({ ok: false, reason, message: REJECTION_MESSAGES[reason] })

const PreCheckoutRow = Schema.Struct({
  user_id: Schema.BigInt,
  status: Schema.String,
  amount: Schema.Number,
  currency: Schema.String,
  expired: Schema.Boolean
})
const decodePreCheckoutRows = decodeRows(PreCheckoutRow)

/**
 * Decides a pre-checkout query with one read of its order: it must exist, belong to the payer,
 * be pending and unexpired, and ask exactly the order's amount and currency.
 */
export const checkPreCheckout = Effect.fn("Payments.checkPreCheckout")(function*(query: PreCheckoutQuery) {
  const sql = yield* SqlClient
  const config = yield* AppConfig
  const orderId = verifyOrderPayload(config.paymentSecret, query.invoice_payload)
  if (Option.isNone(orderId)) return reject("invalid_payload")
  yield* Effect.annotateCurrentSpan({ "steadfast.order_id": String(orderId.value) })
  const rows = yield* sql`
    SELECT user_id, status, amount, currency, expires_at <= now() AS expired
    FROM orders WHERE id = ${orderId.value}`.pipe(decodePreCheckoutRows)
  const order = rows[0]
  if (order === undefined) return reject("unknown_order")
  if (order.user_id !== BigInt(query.from.id)) return reject("not_yours")
  if (order.status === "paid") return reject("already_paid")
  if (order.status === "refunded") return reject("refunded")
  if (order.expired) return reject("expired")
  if (order.currency !== query.currency) return reject("currency_mismatch")
  if (order.amount !== query.total_amount) return reject("amount_mismatch")
  return { ok: true, orderId: orderId.value } satisfies PreCheckoutVerdict
})

// ---------------------------------------------------------------------------------------------
// Successful payments

export type PaymentOutcome =
  | { readonly _tag: "Credited"; readonly orderId: bigint; readonly product: string; readonly credits: number; readonly balance: bigint }
  | { readonly _tag: "Duplicate"; readonly status: string }
  | { readonly _tag: "Flagged"; readonly reason: string }

const OrderRow = Schema.Struct({
  id: Schema.BigInt,
  user_id: Schema.BigInt,
  product: Schema.String,
  credits: Schema.Number,
  amount: Schema.Number,
  currency: Schema.String,
  status: Schema.String,
  expired: Schema.Boolean
})
const decodeOrderRows = decodeRows(OrderRow)
const StatusRow = Schema.Struct({ status: Schema.String })
const decodeStatusRows = decodeRows(StatusRow)

/** Why a payment cannot be matched to its order, or undefined when it can. */
const mismatch = (
  order: typeof OrderRow.Type | undefined,
  orderId: Option.Option<bigint>,
  userId: bigint,
  payment: SuccessfulPayment
): string | undefined => {
  if (Option.isNone(orderId)) return "invoice payload not signed by us"
  if (order === undefined) return `order ${orderId.value} does not exist`
  if (order.user_id !== userId) return `order ${order.id} belongs to user ${order.user_id}`
  if (order.status !== "pending") return `order ${order.id} was already ${order.status}`
  if (order.expired) return `order ${order.id} had expired when it was paid`
  if (order.currency !== payment.currency) return `paid in ${payment.currency}, order is in ${order.currency}`
  if (order.amount !== payment.total_amount) return `paid ${payment.total_amount}, order is for ${order.amount}`
  return undefined
}

/**
 * Records a successful payment exactly once and credits it when it matches its order. The
 * payments row keyed by the charge id is the idempotency key: a redelivery (any update_id, any
 * instance, even concurrently) finds it taken, `ON CONFLICT DO NOTHING` inserts nothing, and
 * nothing else is written. A payment that matches no open order is still recorded, flagged for
 * support with the reason: the money was taken.
 */
export const recordSuccessfulPayment = Effect.fn("Payments.recordSuccessfulPayment")(function*(input: {
  readonly userId: bigint
  readonly chatId: bigint
  readonly updateId: number
  /** Telegram's `date` of the payment message, in Unix seconds. */
  readonly paidAt: number | undefined
  readonly payment: SuccessfulPayment
}) {
  const sql = yield* SqlClient
  const config = yield* AppConfig
  const { payment } = input
  const chargeId = payment.telegram_payment_charge_id
  yield* Effect.annotateCurrentSpan({ "telegram.payment_charge_id": chargeId })

  const orderId = verifyOrderPayload(config.paymentSecret, payment.invoice_payload)
  // The order's row lock serializes every payment of one order; a second payment with the same
  // charge id waits here until the first commits, then stops at the payments insert below.
  const order = Option.isNone(orderId) ? undefined : (yield* sql`
    SELECT id, user_id, product, credits, amount, currency, status,
           expires_at + ${Duration.toMillis(EXPIRY_GRACE)} * interval '1 millisecond'
             < coalesce(to_timestamp(${input.paidAt ?? null}::double precision), now()) AS expired
    FROM orders WHERE id = ${orderId.value}
    FOR UPDATE`.pipe(decodeOrderRows))[0]
  const reason = mismatch(order, orderId, input.userId, payment)
  const credits = reason === undefined && order !== undefined ? order.credits : 0

  const inserted = yield* sql`
    INSERT INTO payments (telegram_payment_charge_id, provider_payment_charge_id, user_id, chat_id, order_id,
                          invoice_payload, currency, total_amount, credits, status, support_reason, update_id)
    VALUES (${chargeId}, ${payment.provider_payment_charge_id ?? null}, ${input.userId}, ${input.chatId},
            ${order?.id ?? null}, ${payment.invoice_payload}, ${payment.currency}, ${payment.total_amount}, ${credits},
            ${reason === undefined ? "credited" : "needs_support"}, ${reason ?? null}, ${input.updateId})
    ON CONFLICT (telegram_payment_charge_id) DO NOTHING
    RETURNING telegram_payment_charge_id`
  if (inserted.length === 0) {
    const existing = yield* sql`SELECT status FROM payments WHERE telegram_payment_charge_id = ${chargeId}`.pipe(
      decodeStatusRows
    )
    yield* Effect.annotateCurrentSpan({ "steadfast.payment_outcome": "duplicate" })
    return { _tag: "Duplicate", status: existing[0]?.status ?? "unknown" } satisfies PaymentOutcome
  }
  if (reason !== undefined || order === undefined) {
    yield* Effect.annotateCurrentSpan({ "steadfast.payment_outcome": "flagged" })
    yield* Effect.logWarning(`payment ${chargeId} of ${payment.total_amount} ${payment.currency} flagged for support: ${reason}`)
    return { _tag: "Flagged", reason: reason ?? "no order" } satisfies PaymentOutcome
  }

  yield* sql`
    UPDATE orders SET status = 'paid', telegram_payment_charge_id = ${chargeId}, paid_at = now()
    WHERE id = ${order.id}`
  const balance = yield* credit(input.userId, order.credits, "purchase", chargeId)
  yield* Effect.annotateCurrentSpan({ "steadfast.payment_outcome": "credited", "steadfast.order_id": String(order.id) })
  return { _tag: "Credited", orderId: order.id, product: order.product, credits: order.credits, balance } satisfies PaymentOutcome
})

/** One ledger entry and the matching balance change; returns the new balance. */
const credit = Effect.fnUntraced(function*(userId: bigint, delta: number, kind: "purchase" | "refund", chargeId: string) {
  const sql = yield* SqlClient
  yield* sql`
    INSERT INTO ledger (user_id, delta, kind, telegram_payment_charge_id)
    VALUES (${userId}, ${delta}, ${kind}, ${chargeId})`
  // A debit only ever follows a credit, so its row exists; and an upsert of a negative row would
  // trip the CHECK before the conflict is even considered.
  const rows = yield* (delta > 0
    ? sql`
        INSERT INTO balances (user_id, credits) VALUES (${userId}, ${delta})
        ON CONFLICT (user_id) DO UPDATE SET credits = balances.credits + excluded.credits, updated_at = now()
        RETURNING credits`
    : sql`UPDATE balances SET credits = credits + ${delta}, updated_at = now() WHERE user_id = ${userId} RETURNING credits`).pipe(
      decodeCredits
    )
  const balance = rows[0]
  if (balance === undefined) return yield* Effect.die(new Error(`debit of ${-delta} for user ${userId}, who has no balance`))
  return balance.credits
})

// ---------------------------------------------------------------------------------------------
// Balance and history

export const balanceOf = Effect.fn("Payments.balanceOf")(function*(userId: bigint) {
  const sql = yield* SqlClient
  const rows = yield* sql`SELECT credits FROM balances WHERE user_id = ${userId}`.pipe(decodeCredits)
  return rows[0]?.credits ?? 0n
})

const PaymentRow = Schema.Struct({
  telegram_payment_charge_id: Schema.String,
  user_id: Schema.BigInt,
  order_id: Schema.NullOr(Schema.BigInt),
  product: Schema.NullOr(Schema.String),
  total_amount: Schema.Number,
  currency: Schema.String,
  credits: Schema.Number,
  status: Schema.String
})
export type PaymentRow = typeof PaymentRow.Type
const decodePaymentRows = decodeRows(PaymentRow)

/** The user's most recent payments, newest first. */
export const recentPayments = Effect.fn("Payments.recentPayments")(function*(userId: bigint, limit: number) {
  const sql = yield* SqlClient
  return yield* sql`
    SELECT p.telegram_payment_charge_id, p.user_id, p.order_id, o.product, p.total_amount, p.currency, p.credits, p.status
    FROM payments p LEFT JOIN orders o ON o.id = p.order_id
    WHERE p.user_id = ${userId}
    ORDER BY p.received_at DESC, p.telegram_payment_charge_id
    LIMIT ${limit}`.pipe(decodePaymentRows)
})

// ---------------------------------------------------------------------------------------------
// Refunds

export type RefundOutcome =
  | { readonly _tag: "Refunded"; readonly payment: PaymentRow; readonly balance: bigint }
  | { readonly _tag: "NothingToRefund" }
  | { readonly _tag: "NotFound"; readonly chargeId: string }
  | { readonly _tag: "AlreadyRefunded"; readonly chargeId: string }
  | { readonly _tag: "CreditsUsed"; readonly payment: PaymentRow; readonly balance: bigint }
  | { readonly _tag: "Refused"; readonly payment: PaymentRow; readonly description: string }

/**
 * Refunds the user's payment `chargeId`, or their most recent refundable one. Telegram is asked
 * first, directly: only once it has returned the Stars are the payment marked refunded and the
 * credits debited, together, in the caller's transaction. If Telegram refuses, nothing changes.
 * If the transaction fails after Telegram refunded, the retry's refund call answers
 * CHARGE_ALREADY_REFUNDED, which records the refund then.
 */
export const refund = Effect.fn("Payments.refund")(function*(userId: bigint, chargeId: string | undefined) {
  const sql = yield* SqlClient
  const botApi = yield* BotApi
  // Row locks: a concurrent /refund or refunded_payment of the same charge waits for our outcome.
  const candidates = yield* (chargeId === undefined
    ? sql`
        SELECT p.telegram_payment_charge_id, p.user_id, p.order_id, o.product, p.total_amount, p.currency, p.credits, p.status
        FROM payments p LEFT JOIN orders o ON o.id = p.order_id
        WHERE p.user_id = ${userId} AND p.status IN ('credited', 'needs_support')
        ORDER BY p.received_at DESC, p.telegram_payment_charge_id
        LIMIT 1
        FOR UPDATE OF p`
    : sql`
        SELECT p.telegram_payment_charge_id, p.user_id, p.order_id, o.product, p.total_amount, p.currency, p.credits, p.status
        FROM payments p LEFT JOIN orders o ON o.id = p.order_id
        WHERE p.user_id = ${userId} AND p.telegram_payment_charge_id = ${chargeId}
        FOR UPDATE OF p`).pipe(decodePaymentRows)
  const payment = candidates[0]
  if (payment === undefined) {
    return (chargeId === undefined ? { _tag: "NothingToRefund" } : { _tag: "NotFound", chargeId }) satisfies RefundOutcome
  }
  yield* Effect.annotateCurrentSpan({ "telegram.payment_charge_id": payment.telegram_payment_charge_id })
  if (payment.status === "refunded") {
    return { _tag: "AlreadyRefunded", chargeId: payment.telegram_payment_charge_id } satisfies RefundOutcome
  }

  const balanceRows = yield* sql`SELECT credits FROM balances WHERE user_id = ${userId} FOR UPDATE`.pipe(decodeCredits)
  const balance = balanceRows[0]?.credits ?? 0n
  if (balance < BigInt(payment.credits)) return { _tag: "CreditsUsed", payment, balance } satisfies RefundOutcome

  const refused = yield* botApi.call("refundStarPayment", {
    user_id: Number(userId),
    telegram_payment_charge_id: payment.telegram_payment_charge_id
  }).pipe(
    Effect.as(Option.none<string>()),
    Effect.catchTags({
      BotApiRejected: (error) =>
        /CHARGE_ALREADY_REFUNDED/i.test(error.description)
          ? Effect.as(
            Effect.logWarning(`refund of ${payment.telegram_payment_charge_id}: Telegram had already refunded it; recording the refund`),
            Option.none<string>()
          )
          : Effect.succeed(Option.some(error.description)),
      ChatBlocked: (error) => Effect.succeed(Option.some(error.description))
    })
  )
  if (Option.isSome(refused)) {
    yield* Effect.logWarning(`refund of ${payment.telegram_payment_charge_id} refused by Telegram: ${refused.value}`)
    return { _tag: "Refused", payment, description: refused.value } satisfies RefundOutcome
  }
  const after = yield* recordRefund(payment.telegram_payment_charge_id, userId)
  return { _tag: "Refunded", payment, balance: Option.getOrElse(after, () => balance) } satisfies RefundOutcome
})

const RefundedRow = Schema.Struct({ user_id: Schema.BigInt, order_id: Schema.NullOr(Schema.BigInt), credits: Schema.Number })
const decodeRefundedRows = decodeRows(RefundedRow)

/**
 * Marks a payment of `payerId` refunded and debits what it credited; a no-op (none) when it
 * already is, or when the charge is not that user's (a message quoting someone else's charge id
 * must never debit them). Used after our own refund and for `refunded_payment` messages.
 */
export const recordRefund = Effect.fn("Payments.recordRefund")(function*(chargeId: string, payerId: bigint) {
  const sql = yield* SqlClient
  const rows = yield* sql`
    UPDATE payments SET status = 'refunded', refunded_at = now()
    WHERE telegram_payment_charge_id = ${chargeId} AND user_id = ${payerId} AND status <> 'refunded'
    RETURNING user_id, order_id, credits`.pipe(decodeRefundedRows)
  const refunded = rows[0]
  if (refunded === undefined) return Option.none<bigint>()
  if (refunded.order_id !== null) {
    yield* sql`
      UPDATE orders SET status = 'refunded'
      WHERE id = ${refunded.order_id} AND telegram_payment_charge_id = ${chargeId}`
  }
  if (refunded.credits === 0) return Option.some(yield* balanceOf(refunded.user_id))
  // A refund Telegram made on its own may find credits already spent: debit what is left, so the
  // balance never goes negative and still equals the ledger's sum.
  const available = yield* sql`SELECT credits FROM balances WHERE user_id = ${refunded.user_id} FOR UPDATE`.pipe(
    decodeCredits
  )
  const debit = Math.min(refunded.credits, Number(available[0]?.credits ?? 0n))
  if (debit < refunded.credits) {
    yield* Effect.logWarning(`refund of ${chargeId}: only ${debit} of ${refunded.credits} credits were left to debit`)
  }
  if (debit === 0) return Option.some(0n)
  return Option.some(yield* credit(refunded.user_id, -debit, "refund", chargeId))
})
