import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule, Scope } from "effect"
import { RESERVED_CONNECTIONS } from "../../src/Config.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { awaitIdlePool, startFaultyApp } from "../support/FaultyApp.ts"
import { interleavedPlan, makePostStats, postPlan, replyToken } from "../support/Load.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

const POOL_MAX = 10

/** One in ten updates misbehaves: fails, dies, throws, hangs past the timeout or is stuck in a query. */
const FAULTS = ["/fail", "/fail", "/fail", "/fail", "/die", "/die", "/throw", "/throw", "/hang", "/sleep"]
const faultOf = (updateId: number): string | undefined => FAULTS[updateId % 100]

describe("no connection leak", () => {
  it.live(
    "1,000 updates with failures, defects, timeouts and cancelled queries leave no pool slot in use and no session in a transaction, and never keep the webhook from storing",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("leak", {
          DB_POOL_MAX: String(POOL_MAX),
          UPDATE_TIMEOUT_MS: "1000",
          MAX_ATTEMPTS: "1",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        }, { quiet: true })

        // Sampled from the test's own connection, which is not one of the app's sessions.
        let maxSessions = 0
        let maxUsed = 0
        const sampler = yield* Effect.all([app.pg.appSessions, app.db.stats]).pipe(
          Effect.tap(([sessions, stats]) =>
            Effect.sync(() => {
              maxSessions = Math.max(maxSessions, sessions.length)
              maxUsed = Math.max(maxUsed, stats.used)
            })
          ),
          Effect.repeat(Schedule.spaced("10 millis")),
          Effect.forkScoped
        )

        const plan = interleavedPlan({
          chats: 20,
          perChat: 50,
          firstUpdateId: 100_000,
          firstChatId: 990_000,
          seed: 5,
          text: (updateId) => faultOf(updateId) ?? `u${updateId}`
        })
        const texts = plan.flat()
        const faulty = texts.filter((planned) => planned.text.startsWith("/")).length
        assert.strictEqual(faulty, 100)
        const posted = makePostStats()
        yield* postPlan(Effect.succeed(app.base), plan, posted)
        // Handlers failing, hanging and stuck in queries never took the connections ingress needs.
        assert.deepStrictEqual([...posted.statuses.entries()], [[200, texts.length]], "every update was stored at the first attempt")
        assert.strictEqual(posted.failures, 0)

        const statuses = yield* eventually(
          "every update finished",
          app.pg.inboxStatuses,
          (counts) => (counts["done"] ?? 0) + (counts["dead"] ?? 0) === texts.length,
          { timeout: "90 seconds" }
        )
        const dead = yield* app.pg.query<{ update_id: string }>(`SELECT update_id FROM inbox WHERE status = 'dead'`)
        const deadIds = new Set(dead.map((row) => Number(row.update_id)))
        const faultyIds = texts.filter((planned) => planned.text.startsWith("/")).map((planned) => planned.updateId)
        assert.isTrue(faultyIds.every((id) => deadIds.has(id)), "every misbehaving update was dead-lettered")
        // An ordinary update may time out too on a busy machine (the timeout covers waiting for
        // a pool slot); what matters here is that each finished update committed its reply once.
        assert.isAtMost(deadIds.size - faulty, 50, `ordinary updates timed out: ${JSON.stringify(statuses)}`)
        // Each finished ordinary update replied once: a re-run of one that timed out after its reply
        // got the recorded reply back.
        const done = yield* app.pg.query<{ update_id: string }>(`SELECT update_id FROM inbox WHERE status = 'done'`)
        const doneIds = new Set(done.map((row) => Number(row.update_id)))
        const replies = (yield* app.standIn.calls).filter((call) => call.method === "sendMessage").map((call) =>
          replyToken(String(call.params["text"]))
        )
        for (const planned of texts) {
          if (!doneIds.has(planned.updateId) || planned.text.startsWith("/")) continue
          assert.strictEqual(replies.filter((token) => token === planned.text).length, 1, `one reply to update ${planned.updateId}`)
        }

        yield* awaitIdlePool(app.db)
        yield* eventually(
          "no session active or idle in transaction",
          app.pg.appSessions,
          (sessions) => sessions.every((session) => session.state === "idle"),
          { timeout: "10 seconds" }
        )
        yield* Fiber.interrupt(sampler)
        assert.isAtLeast(maxSessions, 2, "the sampler saw the app at work")
        // Every worker held a connection at once (plus the LISTEN one): the pool was contended while
        // ingress stored every update at its first attempt.
        assert.isAtLeast(maxUsed, POOL_MAX - RESERVED_CONNECTIONS + 1, "the sampler saw every worker holding a connection")
        const stats = yield* app.db.stats
        assert.strictEqual(stats.used, 1, "only the LISTEN connection's slot is in use")
        assert.strictEqual(stats.pending, 0)
        const marks = yield* app.pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM test_marks`)
        assert.strictEqual(marks[0]?.n, 0, "no write of a failed, timed-out or cancelled handler committed")
      }),
    120_000
  )

  it.live(
    "shutting down while handlers hang interrupts them: their transactions roll back, their updates go back to pending and every connection is closed",
    () =>
      Effect.gen(function*() {
        const appScope = yield* Scope.make()
        const app = yield* Scope.provide(appScope)(
          startFaultyApp("leak_shutdown", { UPDATE_TIMEOUT_MS: "30000", SHUTDOWN_GRACE_MS: "200" })
        )
        const pg = yield* pgProbe(app.databaseUrl)
        for (const [i, updateId] of [110_001, 110_002, 110_003].entries()) {
          const response = yield* postUpdate(app.base, sampleUpdate({ updateId, chatId: 995_000 + i, text: "/hang" }))
          assert.strictEqual(response.status, 200)
        }
        yield* awaitProbe(app.probe, (entries) => entries.length === 3, "20 seconds")
        const during = yield* app.db.stats
        assert.isAtLeast(during.used, 4, "three hanging transactions and the LISTEN connection hold slots")

        yield* Scope.close(appScope, Exit.void)
        yield* eventually("every app session closed", pg.appSessions, (sessions) => sessions.length === 0, { timeout: "10 seconds" })
        const rows = yield* pg.query<{ status: string; attempts: number; lease_id: string | null }>(
          `SELECT status, attempts, lease_id FROM inbox WHERE update_id IN (110001, 110002, 110003)`
        )
        assert.deepStrictEqual(rows, Array.from({ length: 3 }, () => ({ status: "pending", attempts: 0, lease_id: null })))
        const marks = yield* pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM test_marks`)
        assert.strictEqual(marks[0]?.n, 0)
      }),
    60_000
  )

  it.live(
    "with every pool slot held, acquiring fails with a typed PoolTimeout, the webhook answers 503 within seconds, and both recover once the slots are free",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("leak_pool_timeout", {
          DB_POOL_MAX: "5",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        })
        const idle = yield* awaitIdlePool(app.db)
        const holders = yield* Effect.forEach(
          Array.from({ length: idle.idle }),
          // As ingress: it is the one workload that may take every slot (the others have a share).
          () => Effect.forkChild(app.db.withConnection(Effect.never, undefined, "ingress"), { startImmediately: true })
        )
        yield* eventually("all slots held", app.db.stats, (stats) => stats.idle === 0, { timeout: "5 seconds" })

        const started = Date.now()
        const exit = yield* Effect.exit(app.db.withConnection(app.db.sql`SELECT 1`, "300 millis"))
        assert.isTrue(
          Exit.isFailure(exit) && exit.cause.reasons.some((reason) => reason._tag === "Fail" && reason.error._tag === "PoolTimeout")
        )
        assert.isBelow(Date.now() - started, 3_000)

        const postedAt = Date.now()
        const response = yield* postUpdate(app.base, sampleUpdate({ updateId: 120_001, chatId: 996_001, text: "u120001" }))
        const tookMs = Date.now() - postedAt
        assert.strictEqual(response.status, 503)
        assert.strictEqual(response.headers["retry-after"], "5")
        assert.isBelow(tookMs, 6_000, "the webhook answers instead of hanging")
        assert.isAbove((yield* app.db.stats).timeouts, 0)

        yield* Effect.forEach(holders, Fiber.interrupt, { discard: true })
        yield* awaitIdlePool(app.db)
        const retried = yield* postUpdate(app.base, sampleUpdate({ updateId: 120_001, chatId: 996_001, text: "u120001" }))
        assert.strictEqual(retried.status, 200)
        yield* app.standIn.awaitCalls((calls) => calls.some((call) => String(call.params["text"]).includes("u120001")), "20 seconds")
      }),
    60_000
  )
})
