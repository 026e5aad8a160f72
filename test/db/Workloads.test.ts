import { SqlClient } from "effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Queue, Redacted, Schedule } from "effect"
import { Database } from "../../src/db/Database.ts"
import { isCommand, makeHandler } from "../../src/bot/Handler.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { freshDatabase, inboxRow, pgProbe, sqlErrorReason } from "../support/TestDatabase.ts"

const POOL_MAX = 6

describe("pool shares and statement limits", () => {
  it.live(
    "the webhook stores and /health reads while every handler holds a transaction and background work holds its whole share",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("workloads_reserve"))
        const pg = yield* pgProbe(databaseUrl)
        const latch = yield* Deferred.make<void>()
        const entered = yield* Queue.unbounded<number>()
        // Begins its transaction (and so takes its pool slot) with a statement, and holds it until the latch opens.
        const block = makeHandler({
          name: "block",
          matches: isCommand("block"),
          handle: ({ update }) =>
            Effect.gen(function*() {
              const sql = yield* SqlClient
              yield* sql`SELECT 1`
              yield* Queue.offer(entered, update.update_id)
              yield* Deferred.await(latch)
            })
        })
        const app = yield* Layer.build(testAppLayer({ databaseUrl, handlers: [block], env: { DB_POOL_MAX: String(POOL_MAX) } }))
        const db = Context.get(app, Database)
        const base = yield* Effect.provideContext(baseUrl, app)
        const workers = POOL_MAX - 4

        // Every worker in a handler transaction.
        for (let i = 1; i <= workers; i++) {
          const posted = yield* postUpdate(base, sampleUpdate({ updateId: 910_000 + i, chatId: 910_000 + i, text: "/block" }))
          assert.strictEqual(posted.status, 200)
        }
        yield* Effect.forEach(Array.from({ length: workers }), () => Queue.take(entered), { discard: true })
        // Background work (claim loops, senders' bookkeeping) wanting more than its share.
        const holders = yield* Effect.forEach(
          Array.from({ length: 4 }),
          () => Effect.forkChild(db.withConnection(Deferred.await(latch), "1 minute"), { startImmediately: true })
        )
        // Handlers, LISTEN and one holder use their shares whole; the other holders (started at once,
        // so already waiting) queue on the background share, not on the pool.
        yield* eventually("the handler and background shares in use", db.stats, (stats) => stats.used === workers + 2, {
          timeout: "10 seconds"
        })

        const update = sampleUpdate({ updateId: 910_100, chatId: 910_100, text: "still heard" })
        const stored = yield* postUpdate(base, update)
        assert.strictEqual(stored.status, 200, stored.body)
        assert.strictEqual((yield* inboxRow(pg, 910_100))?.update_id, "910100")
        // One answer may miss its 80 ms on a loaded machine; a later one reads the database.
        const health = yield* Effect.promise(() => fetch(`${base}/health`).then((response) => response.text())).pipe(
          Effect.repeat({
            schedule: Schedule.spaced("200 millis"),
            until: (text) => text.includes(`"postgres:responseTime":[{"observedValue"`)
          }),
          Effect.timeout("15 seconds")
        )
        assert.include(health, `"inbox:backlog"`)

        yield* Deferred.succeed(latch, undefined)
        yield* Effect.forEach(holders, Fiber.join, { discard: true })
        yield* eventually(
          "the blocked updates done",
          Effect.all(Array.from({ length: workers }, (_, i) => inboxRow(pg, 910_001 + i))),
          (rows) => rows.every((row) => row?.status === "done"),
          { timeout: "20 seconds" }
        )
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "a statement over its workload's limit fails with StatementTimeoutError: handler and background at the session default, health at 80 ms, and the limit never leaks into the session",
    () =>
      Effect.gen(function*() {
        const url = yield* Effect.promise(() => freshDatabase("workloads_limits"))
        // One connection: every statement below runs on the same session, one after the other.
        const db = Context.get(yield* Layer.build(Database.layerUrl(Redacted.make(url), 1, { statementTimeout: "500 millis" })), Database)
        const sleep = (seconds: number) => db.sql`SELECT pg_sleep(${seconds})`

        assert.strictEqual(sqlErrorReason(yield* Effect.exit(db.transaction(sleep(5)))), "StatementTimeoutError", "handler")
        assert.strictEqual(sqlErrorReason(yield* Effect.exit(db.withConnection(sleep(5)))), "StatementTimeoutError", "background")
        assert.strictEqual(
          sqlErrorReason(yield* Effect.exit(db.withConnection(sleep(0.3), undefined, "health"))),
          "StatementTimeoutError",
          "health"
        )
        // Ingress's own limit (3 s) is above this session default, so the default applies.
        assert.strictEqual(
          sqlErrorReason(yield* Effect.exit(db.withConnection(sleep(5), undefined, "ingress"))),
          "StatementTimeoutError",
          "ingress"
        )
        // After health's SET LOCAL the session is back at its default: 0.3 s is within it.
        assert.isTrue(Exit.isSuccess(yield* Effect.exit(db.withConnection(sleep(0.3)))), "background within its limit")
        assert.isTrue(Exit.isSuccess(yield* Effect.exit(db.transaction(sleep(0.3)))), "handler within its limit")
      }).pipe(Effect.scoped),
    60_000
  )
})
