import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { awaitIdlePool, type FaultyApp, startFaultyApp } from "../support/FaultyApp.ts"
import { awaitStatus, type PgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const MAX_ATTEMPTS = 2
// 1 s rather than less: the sampler below must see the stuck transaction while it exists,
// also on a busy machine.
const env = { UPDATE_TIMEOUT_MS: "1000", MAX_ATTEMPTS: String(MAX_ATTEMPTS), SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }

const postText = (app: FaultyApp, updateId: number, chatId: number, text: string) =>
  Effect.map(postUpdate(app.base, sampleUpdate({ updateId, chatId, text })), (response) => assert.strictEqual(response.status, 200))

/** Samples the app's sessions from a connection of the test's own, remembering every state seen. */
const sampleSessions = (pg: PgProbe) =>
  Effect.gen(function*() {
    const seen = new Map<string, number>()
    const fiber = yield* pg.appSessions.pipe(
      Effect.tap((rows) =>
        Effect.sync(() => {
          for (const row of rows) {
            const key = `${row.state}: ${row.query.includes("pg_sleep") ? "pg_sleep" : "other"}`
            seen.set(key, (seen.get(key) ?? 0) + 1)
          }
        })
      ),
      Effect.repeat(Schedule.spaced("20 millis")),
      Effect.forkScoped
    )
    return { seen, stop: Fiber.interrupt(fiber) }
  })

const idleInTransaction = (pg: PgProbe) =>
  Effect.map(pg.appSessions, (sessions) => sessions.filter((session) => session.state?.startsWith("idle in transaction")).length)

const marksOf = (app: FaultyApp, updateId: number) =>
  Effect.map(
    app.pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM test_marks WHERE update_id = $1`, [updateId]),
    (rows) => rows[0]?.n
  )

describe("handler timeout", () => {
  it.live(
    "a handler that never finishes is interrupted at UPDATE_TIMEOUT_MS: its transaction rolls back, its connection is released, and the update is retried, then dead",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("timeout_hang", env)
        const idle = yield* awaitIdlePool(app.db)
        const sessions = yield* sampleSessions(app.pg)

        const chatId = 830_001
        yield* postText(app, 7_001, chatId, "/hang")
        yield* postText(app, 7_002, chatId, "u7002")

        // The first attempt is inside its transaction now (it wrote a mark, then hangs).
        yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.updateId === 7_001), "20 seconds")
        const during = yield* app.db.stats
        assert.isAbove(during.used, idle.used, "the hanging transaction holds a pool slot")

        const row = yield* awaitStatus(app.pg, 7_001, "dead")
        assert.strictEqual(row.attempts, MAX_ATTEMPTS)
        assert.include(row.last_error ?? "", "timed out after 1s")
        const attempts = yield* awaitProbe(app.probe, (entries) => entries.length >= MAX_ATTEMPTS, "5 seconds")
        assert.strictEqual(attempts.filter((e) => e.updateId === 7_001).length, MAX_ATTEMPTS, "both attempts ran the handler")
        assert.strictEqual(yield* marksOf(app, 7_001), 0, "the mark written before hanging was rolled back")

        yield* app.standIn.awaitCalls((calls) => calls.some((call) => String(call.params["text"]).includes("u7002")), "20 seconds")
        yield* awaitIdlePool(app.db)
        yield* sessions.stop
        assert.isAtLeast(
          sessions.seen.get("idle in transaction: other") ?? 0,
          1,
          "the sampler saw the hanging transaction while it existed"
        )
        assert.strictEqual(yield* idleInTransaction(app.pg), 0, "no session is left idle in transaction")

        const logged = yield* app.logs.await(
          "the timeout",
          (log) => log.level === "Error" && log.message.includes("update 7001 (message) timed out after 1s on attempt 1")
        )
        // What it was doing: the handler's own span is named as open, innermost first.
        assert.match(logged.message, /it was doing:\n\s*spans: Handler\.test-hang( <|$)/m, logged.message)
      }),
    60_000
  )

  it.live(
    "a handler stuck in a query is interrupted at UPDATE_TIMEOUT_MS: the query is cancelled on the server, the transaction rolled back and the connection released",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("timeout_sleep", env)
        yield* awaitIdlePool(app.db)
        const sessions = yield* sampleSessions(app.pg)

        yield* postText(app, 7_101, 830_101, "/sleep")
        const row = yield* awaitStatus(app.pg, 7_101, "dead")
        assert.strictEqual(row.attempts, MAX_ATTEMPTS)
        // The handler's deadline, or (on a busy machine, a moment before it) the session's
        // statement_timeout, set to the same UPDATE_TIMEOUT_MS as its backstop.
        assert.match(row.last_error ?? "", /timed out after 1s|StatementTimeoutError/)
        assert.strictEqual(yield* marksOf(app, 7_101), 0)

        yield* awaitIdlePool(app.db)
        // pg_sleep(60) would still run for about a minute had the interruption not cancelled it.
        yield* eventually(
          "no pg_sleep left running",
          app.pg.appSessions,
          (sessions) => !sessions.some((session) => session.state === "active" && session.query.includes("pg_sleep")),
          { timeout: "5 seconds" }
        )
        yield* sessions.stop
        assert.isAtLeast(sessions.seen.get("active: pg_sleep") ?? 0, 1, "the sampler saw the query running")
        assert.strictEqual(yield* idleInTransaction(app.pg), 0)

        // The connection that ran the cancelled query is usable again: the app still answers.
        yield* postText(app, 7_102, 830_102, "u7102")
        yield* app.standIn.awaitCalls((calls) => calls.some((call) => String(call.params["text"]).includes("u7102")), "20 seconds")
      }),
    60_000
  )
})
