import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Effect, Fiber, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { AppConfig } from "../../src/Config.ts"
import { findProduct } from "../../src/payments/Catalogue.ts"
import { createOrder, type IssuedOrder, type PaymentOutcome, recordSuccessfulPayment } from "../../src/payments/Payments.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { baseUrl, testEnv } from "../support/TestApp.ts"
import {
  allCalls,
  assertMoneyInvariants,
  awaitFinished,
  execute,
  makeShopper,
  messagesTo,
  moneyOf,
  newShopper,
  nextChargeId,
  nextUpdateId,
  nextUserId,
  orderIdOf,
  paymentAppLayer,
  paymentAppOn,
  paymentState,
  successfulPaymentUpdate,
  termsOf
} from "./PaymentSupport.ts"
import { AppDatabase, freshDatabase, holdTransaction } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

const receipts = (calls: Parameters<typeof messagesTo>[0], userId: number) =>
  messagesTo(calls, userId).filter((text) => text.includes("credits added"))

describe("exactly-once crediting", () => {
  layer(paymentAppLayer("payments_once"), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("the same successful_payment delivered again, and again under a new update_id, credits once and sends one receipt", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_100")
        const chargeId = nextChargeId()
        const first = yield* shopper.pay({ ...termsOf(invoice), chargeId })
        // Telegram redelivers the same update (same update_id): the inbox drops it.
        yield* shopper.post(successfulPaymentUpdate(shopper.userId, { ...termsOf(invoice), chargeId }, first))
        // The same payment again under new update_ids: processed, recognised by its charge id.
        const second = yield* shopper.pay({ ...termsOf(invoice), chargeId })
        const third = yield* shopper.pay({ ...termsOf(invoice), chargeId })
        for (const updateId of [first, second, third]) assert.strictEqual((yield* awaitFinished(updateId))?.attempts, 1)

        assert.deepInclude(yield* paymentState(chargeId), { status: "credited", credits: 100, order_status: "paid" })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
        yield* shopper.awaitMessages(1)
        // Once the balance reply (queued after everything above) arrived, no late receipt can come.
        assert.strictEqual(yield* shopper.say("/balance"), "Your balance: 100 credits.")
        assert.deepStrictEqual(receipts(yield* standIn.calls, shopper.userId).length, 1)
        yield* assertMoneyInvariants
      }))

    it.effect("the crediting transaction's connection dying after the order is marked paid: rolled back, retried, credited exactly once", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const invoice = yield* shopper.buy("credits_500")
        const orderId = orderIdOf(invoice.payload)
        // Fault injection inside the transaction: right after this order's UPDATE to 'paid', the
        // backend terminates itself, once (a sequence is not rolled back with the transaction).
        yield* execute(`CREATE SEQUENCE fault_${orderId}`)
        yield* execute(`
          CREATE FUNCTION fault_${orderId}() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF NEW.id = ${orderId} AND NEW.status = 'paid' AND nextval('fault_${orderId}') = 1 THEN
              PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
          END $$`)
        yield* execute(`CREATE TRIGGER fault_${orderId} AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION fault_${orderId}()`)

        const chargeId = nextChargeId()
        const updateId = yield* shopper.pay({ ...termsOf(invoice), chargeId })
        const row = yield* awaitFinished(updateId)
        // The run that died with its connection is not counted against MAX_ATTEMPTS, but it ran.
        assert.strictEqual(row?.attempts, 1, "a lost connection is not the update's fault")
        const runs = yield* Effect.flatMap(
          AppDatabase,
          (db) => db.rows(Schema.Struct({ n: Schema.Number }), `SELECT last_value::int AS n FROM fault_${orderId}`)
        )
        assert.strictEqual(runs[0]?.n, 2, "the crediting ran twice: once cut off, once to the end")
        assert.deepInclude(yield* paymentState(chargeId), {
          status: "credited",
          credits: 500,
          order_status: "paid",
          order_charge: chargeId
        })
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 500, ledger_sum: 500, ledger_entries: 1, payments: 1 })
        yield* shopper.awaitMessages(1)
        assert.strictEqual(yield* shopper.say("/balance"), "Your balance: 500 credits.")
        assert.strictEqual(receipts(yield* standIn.calls, shopper.userId).length, 1)
        yield* execute(`DROP TRIGGER fault_${orderId} ON orders`)
        yield* assertMoneyInvariants
      }))
  })

  it.live("the same payment posted at once to two app instances sharing one database credits once", () =>
    Effect.gen(function*() {
      const { a, b, db, both } = yield* twoInstances("payments_two")
      const userId = nextUserId()
      const viaOne = makeShopper(a.base, both, db, userId)
      const viaTwo = makeShopper(b.base, both, db, userId)

      const invoice = yield* viaOne.buy("credits_100")
      assert.deepStrictEqual(yield* viaTwo.preCheckout(termsOf(invoice)), { ok: true })
      const chargeId = nextChargeId()
      const terms = { ...termsOf(invoice), chargeId }
      const updates = [nextUpdateId(), nextUpdateId(), nextUpdateId()].map((id) => successfulPaymentUpdate(userId, terms, id))
      // Every update to both instances, all at once: redeliveries and duplicates race each other.
      yield* Effect.forEach(updates.flatMap((update) => [viaOne.post(update), viaTwo.post(update)]), (post) => post, {
        concurrency: "unbounded",
        discard: true
      })
      for (const update of updates) yield* awaitFinished(update.update_id).pipe(Effect.provideService(AppDatabase, db))

      const money = yield* moneyOf(userId).pipe(Effect.provideService(AppDatabase, db))
      assert.deepStrictEqual(money, { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
      yield* viaTwo.awaitMessages(1)
      // Once the /balance reply arrived (same chat, queued after the payments), no receipt is pending.
      assert.strictEqual(yield* viaTwo.say("/balance"), "Your balance: 100 credits.")
      assert.strictEqual(receipts(yield* both.calls, userId).length, 1, "exactly one receipt across both instances")
      yield* assertMoneyInvariants.pipe(Effect.provideService(AppDatabase, db))
    }), 60_000)

  it.live(
    "two different charges for one order, processed at the same time by two instances: one is credited, the other flagged for support",
    () =>
      Effect.gen(function*() {
        const { a, b, db, both } = yield* twoInstances("payments_two_charges")
        const userId = nextUserId()
        const invoice = yield* makeShopper(a.base, both, db, userId).buy("credits_100")
        const charges = [nextChargeId(), nextChargeId()] as const
        // The second charge comes from another chat (a group), so per-chat order does not serialize
        // the two: only the order's row lock can.
        const fromPrivateChat = successfulPaymentUpdate(userId, { ...termsOf(invoice), chargeId: charges[0] })
        const fromGroup = successfulPaymentUpdate(userId, { ...termsOf(invoice), chargeId: charges[1] })
        const group = { id: -1_000_000_000_000 - userId % 1_000_000, type: "group" as const, title: "Payers" }
        const inGroup = fromGroup.message === undefined
          ? assert.fail("not a message")
          : { ...fromGroup, message: { ...fromGroup.message, chat: group } }

        // An uncommitted balances row of ours makes each crediting transaction wait before its
        // commit, so both are in flight together; each waits on a lock, whichever it is.
        const blocker = yield* holdTransaction(db.url)
        yield* blocker.query("INSERT INTO balances (user_id, credits) VALUES ($1, 0)", [userId])
        yield* makeShopper(a.base, both, db, userId).post(fromPrivateChat)
        yield* awaitLockWaiters(db, 1)
        yield* makeShopper(b.base, both, db, userId).post(inGroup)
        yield* awaitLockWaiters(db, 2)
        yield* blocker.rollback

        yield* Effect.gen(function*() {
          for (const update of [fromPrivateChat, inGroup]) yield* awaitFinished(update.update_id)
          const states = yield* Effect.forEach(charges, paymentState)
          assert.deepStrictEqual(states.map((state) => state?.status), ["credited", "needs_support"])
          assert.include(states[1]?.support_reason ?? "", "already paid")
          assert.deepStrictEqual(yield* moneyOf(userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 2 })
          yield* assertMoneyInvariants
        }).pipe(Effect.provideService(AppDatabase, db))
      }),
    60_000
  )

  it.live(
    "two transactions recording the same charge at the same moment: the second waits for the first, then credits nothing",
    () =>
      Effect.gen(function*() {
        const url = yield* Effect.promise(() => freshDatabase("payments_race"))
        const app = yield* Layer.build(paymentAppOn(url))
        const sql = Context.get(app, SqlClient)
        const db = Context.get(app, AppDatabase)
        const config = yield* Layer.build(AppConfig.layer.pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(url, "http://127.0.0.1:9"))))
        ))
        const inTransaction = <A, E>(effect: Effect.Effect<A, E, SqlClient | AppConfig>) =>
          sql.withTransaction(effect).pipe(Effect.provideService(SqlClient, sql), Effect.provideContext(config))

        /**
         * Runs the first recording up to (not including) its commit, starts the second, waits until
         * the second is blocked on the first's locks, then lets the first commit — or fail.
         */
        const race = (payload: (issued: IssuedOrder) => string, firstFails: boolean) =>
          Effect.gen(function*() {
            const userId = BigInt(nextUserId())
            const product = findProduct("credits_100")!
            const order = yield* inTransaction(createOrder({ userId, chatId: userId, product, updateId: 0 }))
            const payment = {
              currency: "XTR",
              total_amount: 50,
              invoice_payload: payload(order),
              telegram_payment_charge_id: nextChargeId()
            }
            const input = (updateId: number) => ({ userId, chatId: userId, updateId, paidAt: undefined, payment })
            const recorded = yield* Deferred.make<PaymentOutcome>()
            const proceed = yield* Deferred.make<void>()
            const first = yield* Effect.forkChild(inTransaction(Effect.gen(function*() {
              const outcome = yield* recordSuccessfulPayment(input(nextUpdateId()))
              yield* Deferred.succeed(recorded, outcome)
              yield* Deferred.await(proceed)
              if (firstFails) return yield* Effect.fail("the first instance's transaction failed before commit")
              return outcome
            })))
            const firstOutcome = yield* Deferred.await(recorded)
            const second = yield* Effect.forkChild(inTransaction(recordSuccessfulPayment(input(nextUpdateId()))))
            yield* awaitLockWaiters(db, 1)
            yield* Deferred.succeed(proceed, undefined)
            const firstExit = yield* Fiber.await(first)
            const secondOutcome = yield* Fiber.join(second)
            const money = yield* moneyOf(Number(userId)).pipe(Effect.provideService(AppDatabase, db))
            return { first: firstOutcome._tag, committed: firstExit._tag === "Success", second: secondOutcome._tag, money }
          })

        // A matching payment: the second transaction waits on the order's row lock.
        const matched = yield* race(signedPayload, false)
        assert.deepStrictEqual(matched, {
          first: "Credited",
          committed: true,
          second: "Duplicate",
          money: { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 }
        })
        // A payment for no order: the second waits on the charge id's unique index entry.
        const unmatched = yield* race(() => "o999999.AAAAAAAAAAAAAAAAAAAAAA", false)
        assert.deepStrictEqual(unmatched, {
          first: "Flagged",
          committed: true,
          second: "Duplicate",
          money: { balance: 0, ledger_sum: 0, ledger_entries: 0, payments: 1 }
        })
        // The first transaction dies before committing: the waiting one takes over and credits, once.
        const takeover = yield* race(signedPayload, true)
        assert.deepStrictEqual(takeover, {
          first: "Credited",
          committed: false,
          second: "Credited",
          money: { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 }
        })
        yield* assertMoneyInvariants.pipe(Effect.provideService(AppDatabase, db))
      }),
    60_000
  )
})

const signedPayload = (issued: IssuedOrder) => String(issued.invoice["payload"])

/** Two app instances on one fresh database, and the calls of both their stand-ins together. */
const twoInstances = (label: string) =>
  Effect.gen(function*() {
    const url = yield* Effect.promise(() => freshDatabase(label))
    const one = yield* Layer.build(paymentAppOn(url))
    const two = yield* Layer.build(paymentAppOn(url))
    const instance = (app: typeof one) =>
      Effect.map(Effect.provideContext(baseUrl, app), (base) => ({ base, standIn: Context.get(app, BotApiRecorder) }))
    const a = yield* instance(one)
    const b = yield* instance(two)
    // Either instance may process an update and deliver its calls: watch both stand-ins.
    return { a, b, db: Context.get(one, AppDatabase), both: allCalls([a.standIn, b.standIn]) }
  })

const awaitLockWaiters = (db: AppDatabase["Service"], count: number) =>
  eventually(
    `${count} transaction(s) waiting on a lock`,
    db.rows(
      Schema.Struct({ waiting: Schema.Number }),
      "SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ),
    (rows) => (rows[0]?.waiting ?? 0) >= count
  )
