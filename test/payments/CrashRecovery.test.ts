import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { baseUrl } from "../support/TestApp.ts"
import {
  assertMoneyInvariants,
  awaitFinished,
  commandUpdate,
  execute,
  makeShopper,
  messagesTo,
  moneyOf,
  nextChargeId,
  nextUpdateId,
  orderIdOf,
  paymentAppOn,
  paymentState,
  successfulPaymentUpdate,
  termsOf
} from "./PaymentSupport.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { eventually } from "../support/Eventually.ts"
import { AppDatabase } from "../support/TestDatabase.ts"

describe("database failure while crediting", () => {
  it.live(
    "PostgreSQL stopping in the middle of the crediting transaction, then coming back: credited exactly once",
    () =>
      Effect.gen(function*() {
        // A private server, so stopping it touches no other suite.
        const cluster = yield* Effect.acquireRelease(
          Effect.promise(() => startCluster()),
          (cluster) => Effect.promise(() => cluster.dispose())
        )
        const url = yield* Effect.promise(() => createDatabase(cluster.url("postgres"), "payments_crash"))
        // A short handler timeout keeps the lease (timeout + 5 s) of the interrupted attempt short.
        const app = yield* Layer.build(paymentAppOn(url, { env: { UPDATE_TIMEOUT_MS: "5000", SHUTDOWN_GRACE_MS: "1000" } }))
        const db = Context.get(app, AppDatabase)
        const standIn = Context.get(app, BotApiRecorder)
        const base = yield* Effect.provideContext(baseUrl, app)
        const shopper = makeShopper(base, standIn, db)
        const withDb = Effect.provideService(AppDatabase, db)

        const invoice = yield* shopper.buy("credits_100")
        assert.deepStrictEqual(yield* shopper.preCheckout(termsOf(invoice)), { ok: true })
        const orderId = orderIdOf(invoice.payload)

        // Hold the crediting transaction right after it marked the order paid (once: a sequence
        // does not roll back), so the server can be stopped with that transaction open.
        yield* withDb(execute("CREATE SEQUENCE pause_once"))
        yield* withDb(execute(`
        CREATE FUNCTION pause_after_paid() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'paid' AND nextval('pause_once') = 1 THEN PERFORM pg_sleep(60); END IF;
          RETURN NEW;
        END $$`))
        yield* withDb(execute("CREATE TRIGGER pause_after_paid AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION pause_after_paid()"))

        const chargeId = nextChargeId()
        const updateId = nextUpdateId()
        yield* shopper.post(successfulPaymentUpdate(shopper.userId, { ...termsOf(invoice), chargeId }, updateId))
        yield* eventually(
          "the crediting transaction paused after marking the order paid",
          db.rows(
            Schema.Struct({ paused: Schema.Number }),
            "SELECT count(*)::int AS paused FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
          ),
          (rows) => rows[0]?.paused === 1
        )

        // Fast shutdown: the open transaction is aborted with its connection.
        yield* Effect.promise(() => cluster.stop())
        const refused = yield* postUpdate(base, commandUpdate(shopper.userId, "/balance"))
        assert.strictEqual(refused.status, 503, "the outage is real: the webhook cannot store")
        yield* Effect.promise(() => cluster.start())

        const row = yield* withDb(awaitFinished(updateId, "60 seconds"))
        // The run lost with the server is not counted (an outage is not the update's fault), but it ran.
        assert.strictEqual(row?.attempts, 1, "the run lost with the server is not counted")
        const runs = yield* db.rows(Schema.Struct({ n: Schema.Number }), "SELECT last_value::int AS n FROM pause_once")
        assert.isAtLeast(runs[0]?.n ?? 0, 2, "the crediting ran again after the outage")
        assert.deepStrictEqual(yield* withDb(paymentState(chargeId)), {
          status: "credited",
          credits: 100,
          support_reason: null,
          order_id: orderId,
          order_status: "paid",
          order_charge: chargeId
        })
        assert.deepStrictEqual(yield* withDb(moneyOf(shopper.userId)), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
        yield* shopper.awaitMessages(1)
        assert.strictEqual(yield* shopper.say("/balance"), "Your balance: 100 credits.")
        const receipts = messagesTo(yield* standIn.calls, shopper.userId).filter((text) => text.includes("credits added"))
        assert.strictEqual(receipts.length, 1)
        yield* withDb(assertMoneyInvariants)
      }),
    120_000
  )
})
