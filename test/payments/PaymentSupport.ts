// Test support for the payment suites: Telegram-shaped payment updates, a shopper that drives the
// app over /webhook and reads what reached the Bot API stand-in, and SQL checks of the money tables.
import { assert } from "@effect/vitest"
import type { Update } from "grammy/types"
import { type Duration, Effect, Layer, Schema } from "effect"
import type { BotDefinition } from "../../src/bot/Bot.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { eventually } from "../support/Eventually.ts"
import { AppDatabase, freshDatabase, inboxRow } from "../support/TestDatabase.ts"

// ---------------------------------------------------------------------------------------------
// Unique ids. Users get ids above 2^32, as new Telegram accounts do, so bigint handling is exercised.

let lastUpdateId = 100_000
let lastUser = 0
let lastCharge = 0
let lastQuery = 0

export const nextUpdateId = () => ++lastUpdateId
export const nextUserId = () => 7_000_000_000 + process.pid * 1000 + ++lastUser
export const nextChargeId = () => `stxTEST${process.pid}x${++lastCharge}${Math.random().toString(36).slice(2, 10)}`
const nextQueryId = () => `${process.pid}${String(++lastQuery).padStart(8, "0")}`

const BOT = { id: 123456789, is_bot: true as const, first_name: "Steadfast Sandbox", username: "steadfast_sandbox_bot" }
const person = (userId: number) => ({
  id: userId,
  is_bot: false as const,
  first_name: "Grace",
  username: `grace${userId}`,
  language_code: "en"
})
const privateChat = (userId: number) => ({ id: userId, type: "private" as const, first_name: "Grace", username: `grace${userId}` })
const now = () => Math.floor(Date.now() / 1000)

// ---------------------------------------------------------------------------------------------
// Updates, shaped like the ones Telegram posts (checked against grammY's `Update` type)

export const commandUpdate = (userId: number, text: string, updateId = nextUpdateId()): Update =>
  sampleUpdate({ updateId, chatId: userId, text, firstName: "Grace", username: `grace${userId}`, date: now() })

export const callbackUpdate = (userId: number, data: string, updateId = nextUpdateId()): Update => ({
  update_id: updateId,
  callback_query: {
    id: nextQueryId(),
    from: person(userId),
    message: { message_id: updateId, from: BOT, chat: privateChat(userId), date: now(), text: "What would you like to buy?" },
    chat_instance: `-${userId}`,
    data
  }
})

export interface InvoiceTerms {
  readonly payload: string
  readonly amount: number
  readonly currency: string
}

export const preCheckoutUpdate = (userId: number, terms: InvoiceTerms, updateId = nextUpdateId()) => {
  const id = nextQueryId()
  const update = {
    update_id: updateId,
    pre_checkout_query: {
      id,
      from: person(userId),
      currency: terms.currency,
      total_amount: terms.amount,
      invoice_payload: terms.payload
    }
  } satisfies Update
  return { id, update }
}

export const successfulPaymentUpdate = (
  userId: number,
  terms: InvoiceTerms & { readonly chargeId: string; readonly date?: number },
  updateId = nextUpdateId()
): Update => ({
  update_id: updateId,
  message: {
    message_id: updateId,
    from: person(userId),
    chat: privateChat(userId),
    date: terms.date ?? now(),
    successful_payment: {
      currency: terms.currency,
      total_amount: terms.amount,
      invoice_payload: terms.payload,
      telegram_payment_charge_id: terms.chargeId,
      provider_payment_charge_id: ""
    }
  }
})

export const refundedPaymentUpdate = (
  userId: number,
  terms: InvoiceTerms & { readonly chargeId: string },
  updateId = nextUpdateId()
): Update => ({
  update_id: updateId,
  message: {
    message_id: updateId,
    from: person(userId),
    chat: privateChat(userId),
    date: now(),
    refunded_payment: {
      currency: "XTR",
      total_amount: terms.amount,
      invoice_payload: terms.payload,
      telegram_payment_charge_id: terms.chargeId
    }
  }
})

// ---------------------------------------------------------------------------------------------
// Reading the app's database: the kit's probe, as a service the payment helpers find in context

export const execute = (text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.flatMap(AppDatabase, (db) => Effect.asVoid(db.query(text, params)))

/** The update's inbox row, read with the AppDatabase in context. */
export const inboxState = (updateId: number) => Effect.flatMap(AppDatabase, (db) => inboxRow(db, updateId))

/** Waits until the update is finished (done or skipped) and returns its row. */
export const awaitFinished = (updateId: number, timeout: Duration.Input = "15 seconds") =>
  eventually(
    `update ${updateId} finished`,
    inboxState(updateId),
    (row) => row?.status === "done" || row?.status === "skipped",
    { timeout, interval: "25 millis" }
  )

export const UserMoney = Schema.Struct({
  balance: Schema.Number,
  ledger_sum: Schema.Number,
  ledger_entries: Schema.Number,
  payments: Schema.Number
})

/** A user's balance, ledger and payments, as numbers. */
export const moneyOf = (userId: number) =>
  Effect.flatMap(AppDatabase, (db) =>
    Effect.map(
      db.rows(
        UserMoney,
        `SELECT coalesce((SELECT credits FROM balances WHERE user_id = $1), 0)::int AS balance,
                coalesce((SELECT sum(delta) FROM ledger WHERE user_id = $1), 0)::int AS ledger_sum,
                (SELECT count(*) FROM ledger WHERE user_id = $1)::int AS ledger_entries,
                (SELECT count(*) FROM payments WHERE user_id = $1)::int AS payments`,
        [userId]
      ),
      (rows) => rows[0]!
    ))

export const PaymentState = Schema.Struct({
  status: Schema.String,
  credits: Schema.Number,
  support_reason: Schema.NullOr(Schema.String),
  order_id: Schema.NullOr(Schema.String),
  order_status: Schema.NullOr(Schema.String),
  order_charge: Schema.NullOr(Schema.String)
})

export const paymentState = (chargeId: string) =>
  Effect.flatMap(AppDatabase, (db) =>
    Effect.map(
      db.rows(
        PaymentState,
        `SELECT p.status, p.credits, p.support_reason, p.order_id::text AS order_id, o.status AS order_status,
                o.telegram_payment_charge_id AS order_charge
         FROM payments p LEFT JOIN orders o ON o.id = p.order_id WHERE p.telegram_payment_charge_id = $1`,
        [chargeId]
      ),
      (rows) => rows[0]
    ))

export const OrderState = Schema.Struct({
  id: Schema.String,
  user_id: Schema.String,
  product: Schema.String,
  credits: Schema.Number,
  amount: Schema.Number,
  currency: Schema.String,
  status: Schema.String,
  charge: Schema.NullOr(Schema.String),
  ttl_seconds: Schema.Number
})

export const orderState = (orderId: string) =>
  Effect.flatMap(AppDatabase, (db) =>
    Effect.map(
      db.rows(
        OrderState,
        `SELECT id::text, user_id::text, product, credits, amount, currency, status, telegram_payment_charge_id AS charge,
                round(extract(epoch FROM expires_at - created_at))::int AS ttl_seconds
         FROM orders WHERE id = $1`,
        [orderId]
      ),
      (rows) => rows[0]
    ))

const Mismatch = Schema.Struct({ what: Schema.String, key: Schema.String, detail: Schema.String })

/**
 * The money invariants, for every user and payment in the database: balance = sum of the ledger;
 * each payment has exactly one purchase entry of its credits (none when it credited nothing) and,
 * once refunded, exactly one matching refund entry; a paid or refunded order names its payment;
 * an order has at most one payment that credited it.
 */
export const assertMoneyInvariants = Effect.gen(function*() {
  const db = yield* AppDatabase
  const problems = yield* db.rows(
    Mismatch,
    `SELECT 'balance <> sum(ledger)' AS what, coalesce(b.user_id, l.user_id)::text AS key,
            coalesce(b.credits, 0) || ' vs ' || coalesce(l.total, 0) AS detail
     FROM balances b FULL JOIN (SELECT user_id, sum(delta) AS total FROM ledger GROUP BY user_id) l ON l.user_id = b.user_id
     WHERE coalesce(b.credits, 0) <> coalesce(l.total, 0)
     UNION ALL
     SELECT 'purchase entries', p.telegram_payment_charge_id,
            count(l.id) || ' entries, ' || coalesce(sum(l.delta), 0) || ' credits for ' || p.credits
     FROM payments p LEFT JOIN ledger l ON l.telegram_payment_charge_id = p.telegram_payment_charge_id AND l.kind = 'purchase'
     GROUP BY p.telegram_payment_charge_id, p.credits
     HAVING count(l.id) <> (CASE WHEN p.credits > 0 THEN 1 ELSE 0 END) OR coalesce(sum(l.delta), 0) <> p.credits
     UNION ALL
     SELECT 'refund entries', p.telegram_payment_charge_id, p.status || ' with ' || count(l.id) || ' refund entries'
     FROM payments p LEFT JOIN ledger l ON l.telegram_payment_charge_id = p.telegram_payment_charge_id AND l.kind = 'refund'
     GROUP BY p.telegram_payment_charge_id, p.status, p.credits
     HAVING count(l.id) <> (CASE WHEN p.status = 'refunded' AND p.credits > 0 THEN 1 ELSE 0 END)
     UNION ALL
     SELECT 'order without its payment', o.id::text, o.status
     FROM orders o LEFT JOIN payments p ON p.telegram_payment_charge_id = o.telegram_payment_charge_id
     WHERE o.status <> 'pending' AND (p.telegram_payment_charge_id IS NULL OR p.order_id <> o.id)
     UNION ALL
     SELECT 'several payments credited one order', order_id::text, string_agg(telegram_payment_charge_id, ', ')
     FROM payments WHERE order_id IS NOT NULL AND credits > 0
     GROUP BY order_id HAVING count(*) > 1`
  )
  assert.deepStrictEqual(problems, [], "money invariants")
})

// ---------------------------------------------------------------------------------------------
// The app under test

/** The app on a fresh database (plus a pool of ours on it); sending is not rate limited. */
export const paymentAppLayer = (
  label: string,
  options: { readonly env?: Record<string, string>; readonly handlers?: BotDefinition } = {}
) => Layer.unwrap(Effect.map(Effect.promise(() => freshDatabase(label)), (url) => paymentAppOn(url, options)))

export const paymentAppOn = (url: string, options: { readonly env?: Record<string, string>; readonly handlers?: BotDefinition } = {}) =>
  Layer.merge(
    testAppLayer({
      databaseUrl: url,
      env: { SEND_RATE_PER_SECOND: "1000", ...options.env },
      ...(options.handlers === undefined ? {} : { handlers: options.handlers })
    }),
    AppDatabase.layer(url)
  )

// ---------------------------------------------------------------------------------------------
// A shopper: posts updates to /webhook and waits for what the bot does in response

const chatOf = (call: RecordedCall) => Number(call.params["chat_id"])

export const messagesTo = (calls: ReadonlyArray<RecordedCall>, chatId: number): ReadonlyArray<string> =>
  calls.filter((call) => call.method === "sendMessage" && chatOf(call) === chatId).map((call) => String(call.params["text"]))

export const invoicesTo = (calls: ReadonlyArray<RecordedCall>, chatId: number) =>
  calls.filter((call) => call.method === "sendInvoice" && chatOf(call) === chatId)

const InvoiceParams = Schema.Struct({
  chat_id: Schema.Number,
  title: Schema.String,
  description: Schema.String,
  payload: Schema.String,
  provider_token: Schema.String,
  currency: Schema.String,
  prices: Schema.Array(Schema.Struct({ label: Schema.String, amount: Schema.Number }))
})
export type InvoiceParams = typeof InvoiceParams.Type

export interface Shopper {
  readonly userId: number
  /** POSTs an update and checks it was stored (200). */
  readonly post: (update: Update) => Effect.Effect<void>
  /** Sends a text message and waits for the next reply to this chat. */
  readonly say: (text: string) => Effect.Effect<string>
  /** `/buy <product>` and the invoice it produced. */
  readonly buy: (product: string) => Effect.Effect<InvoiceParams & { readonly amount: number }>
  /** Posts a pre-checkout query and waits for its answer. */
  readonly preCheckout: (terms: InvoiceTerms) => Effect.Effect<{ readonly ok: boolean; readonly error_message?: string }>
  /** Posts a successful_payment; returns its update id once it is finished. */
  readonly pay: (terms: InvoiceTerms & { readonly chargeId: string; readonly date?: number }, updateId?: number) => Effect.Effect<number>
  /** Waits until `count` messages reached this chat; returns them all. */
  readonly awaitMessages: (count: number, timeout?: Duration.Input) => Effect.Effect<ReadonlyArray<string>>
}

/** Where the shopper looks for the bot's calls: one stand-in, or several (one per app instance). */
export interface CallSource {
  readonly calls: Effect.Effect<ReadonlyArray<RecordedCall>>
  readonly awaitCalls: (
    predicate: (calls: ReadonlyArray<RecordedCall>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<RecordedCall>, unknown>
}

/** The calls of several stand-ins together, in order of arrival (one chat's calls are never concurrent). */
export const allCalls = (standIns: ReadonlyArray<BotApiRecorder["Service"]>): CallSource => {
  const calls = Effect.map(Effect.forEach(standIns, (standIn) => standIn.calls), (lists) => lists.flat().sort((a, b) => a.at - b.at))
  return {
    calls,
    awaitCalls: (predicate, timeout = "15 seconds") =>
      eventually("calls on the stand-ins", calls, predicate, { timeout, interval: "25 millis" })
  }
}

export const makeShopper = (base: string, standIn: CallSource, db: AppDatabase["Service"], userId = nextUserId()): Shopper => {
  const post = (update: Update) =>
    Effect.flatMap(
      Effect.orDie(postUpdate(base, update)),
      (response) => Effect.sync(() => assert.strictEqual(response.status, 200, `update ${update.update_id}: ${response.body}`))
    )
  const messageCount = Effect.map(standIn.calls, (calls) => messagesTo(calls, userId).length)
  const awaitMessages = (count: number, timeout: Duration.Input = "15 seconds") =>
    Effect.map(
      Effect.orDie(standIn.awaitCalls((calls) => messagesTo(calls, userId).length >= count, timeout)),
      (calls) => messagesTo(calls, userId)
    )
  return {
    userId,
    post,
    awaitMessages,
    say: (text) =>
      Effect.gen(function*() {
        const before = yield* messageCount
        yield* post(commandUpdate(userId, text))
        const messages = yield* awaitMessages(before + 1)
        return messages[before]!
      }),
    buy: (product) =>
      Effect.gen(function*() {
        const before = invoicesTo(yield* standIn.calls, userId).length
        yield* post(commandUpdate(userId, `/buy ${product}`))
        const calls = yield* Effect.orDie(standIn.awaitCalls((calls) => invoicesTo(calls, userId).length > before, "15 seconds"))
        const invoice = yield* Effect.orDie(Schema.decodeUnknownEffect(InvoiceParams)(invoicesTo(calls, userId)[before]!.params))
        return { ...invoice, amount: invoice.prices.reduce((sum, price) => sum + price.amount, 0) }
      }),
    preCheckout: (terms) =>
      Effect.gen(function*() {
        const { id, update } = preCheckoutUpdate(userId, terms)
        yield* post(update)
        const calls = yield* Effect.orDie(standIn.awaitCalls(
          (calls) => calls.some((call) => call.method === "answerPreCheckoutQuery" && call.params["pre_checkout_query_id"] === id),
          "15 seconds"
        ))
        const answer = calls.find((call) => call.method === "answerPreCheckoutQuery" && call.params["pre_checkout_query_id"] === id)!
        const message = answer.params["error_message"]
        return { ok: answer.params["ok"] === true, ...(typeof message === "string" ? { error_message: message } : {}) }
      }),
    pay: (terms, updateId = nextUpdateId()) =>
      Effect.gen(function*() {
        yield* post(successfulPaymentUpdate(userId, terms, updateId))
        yield* awaitFinished(updateId).pipe(Effect.provideService(AppDatabase, db))
        return updateId
      })
  }
}

/** A new shopper (a new user) of the app in context. */
export const newShopper = Effect.gen(function*() {
  return makeShopper(yield* baseUrl, yield* BotApiRecorder, yield* AppDatabase)
})

/** Terms as the invoice states them: what an honest client pays. */
export const termsOf = (invoice: InvoiceParams & { readonly amount: number }): InvoiceTerms => ({
  payload: invoice.payload,
  amount: invoice.amount,
  currency: invoice.currency
})

/** The order id inside a payload we issued. */
export const orderIdOf = (payload: string): string => /^o(\d+)\./.exec(payload)?.[1] ?? assert.fail(`not an order payload: ${payload}`)

/** Buys `product` and pays for it; returns once the receipt arrived. */
export const buyAndPay = (shopper: Shopper, product: string) =>
  Effect.gen(function*() {
    const invoice = yield* shopper.buy(product)
    const chargeId = nextChargeId()
    yield* shopper.pay({ ...termsOf(invoice), chargeId })
    yield* shopper.awaitMessages(1)
    return { invoice, chargeId }
  })
