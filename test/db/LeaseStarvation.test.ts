import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Fiber, Layer, Ref } from "effect"
import { isCommand, makeHandler } from "../../src/bot/Handler.ts"
import { Database, STATEMENT_LIMIT_MS } from "../../src/db/Database.ts"
import { LEASE } from "../../src/queue/LeaseRenewal.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { freshDatabase, pgProbe, sqlErrorReason } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const UPDATE_ID = 930_001
const CHAT = 930_001
const HOLD_MS = 15_000

describe("background work cannot starve leases", () => {
  it.live(
    "with every background connection held for 15 s, a running update keeps its lease, runs once and is answered once; a background statement stops at its own limit",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("lease_starvation"))
        const release = yield* Deferred.make<void>()
        const heldUntil = yield* Deferred.make<void>()
        const runs = yield* Ref.make(0)
        const entered = yield* Deferred.make<void>()
        const hold = makeHandler({
          name: "hold",
          matches: isCommand("hold"),
          handle: ({ reply }) =>
            Effect.gen(function*() {
              yield* Ref.update(runs, (n) => n + 1)
              yield* Deferred.succeed(entered, undefined)
              yield* Deferred.await(release)
              yield* reply("held and done")
            })
        })
        const app = yield* Layer.build(testAppLayer({ databaseUrl, handlers: [hold], env: { UPDATE_TIMEOUT_MS: "40000" } }))
        // Opened however the test ends (before the app closes), so a failed assertion leaves nothing waiting.
        yield* Effect.addFinalizer(() => Effect.all([Deferred.succeed(heldUntil, undefined), Deferred.succeed(release, undefined)]))
        const db = Context.get(app, Database)
        const standIn = Context.get(app, BotApiRecorder)
        const base = yield* Effect.provideContext(baseUrl, app)
        const probe = yield* pgProbe(databaseUrl)

        assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: UPDATE_ID, chatId: CHAT, text: "/hold" }))).status, 200)
        yield* Deferred.await(entered)

        // Every background connection taken (LISTEN has one, these queue for the rest) for 15 s:
        // longer than a lease, so a renewal that needed one would let the lease expire.
        const holders = yield* Effect.forEach(
          Array.from({ length: 3 }),
          () => Effect.forkChild(db.withConnection(Deferred.await(heldUntil), "1 minute"), { startImmediately: true })
        )
        const lease = probe.query<{ lease_id: string | null; left_ms: number | null }>(
          `SELECT lease_id::text, (extract(epoch FROM locked_until - now()) * 1000)::float8 AS left_ms FROM inbox WHERE update_id = $1`,
          [UPDATE_ID]
        )
        const [first] = yield* lease
        assert.isNotNull(first?.lease_id ?? null, "the running update is leased")
        const startedAt = Date.now()
        let lowest = Infinity
        // Watched the whole time: the lease never runs out and never changes hands.
        yield* eventually(
          "the background connections to be held for 15 s",
          Effect.gen(function*() {
            const [row] = yield* lease
            assert.strictEqual(row?.lease_id, first?.lease_id, "the lease changed hands")
            lowest = Math.min(lowest, row?.left_ms ?? -1)
            assert.isAbove(row?.left_ms ?? -1, 0, `the lease expired after ${Date.now() - startedAt} ms`)
            return Date.now() - startedAt
          }),
          (elapsed) => elapsed >= HOLD_MS,
          { timeout: "40 seconds", interval: "250 millis" }
        )

        // A background statement meanwhile would give up at its own limit, not hold a connection for good.
        yield* Deferred.succeed(heldUntil, undefined)
        yield* Effect.forEach(holders, Fiber.join, { discard: true })
        const slowStartedAt = Date.now()
        const slow = yield* Effect.exit(db.withConnection(db.sql`SELECT pg_sleep(30)`, "10 seconds"))
        assert.strictEqual(sqlErrorReason(slow), "StatementTimeoutError")
        assert.isBelow(Date.now() - slowStartedAt, STATEMENT_LIMIT_MS.background! + 5_000)

        yield* Deferred.succeed(release, undefined)
        yield* eventually(
          "the update done",
          probe.query<{ status: string }>("SELECT status FROM inbox WHERE update_id = $1", [UPDATE_ID]),
          (rows) => rows[0]?.status === "done",
          { timeout: "20 seconds" }
        )
        const sent = yield* standIn.awaitCalls(
          (calls) => calls.some((call) => call.method === "sendMessage" && String(call.params["chat_id"]) === String(CHAT)),
          "20 seconds"
        )
        assert.strictEqual(yield* Ref.get(runs), 1, "the handler ran once")
        assert.strictEqual(
          sent.filter((call) => call.method === "sendMessage" && String(call.params["chat_id"]) === String(CHAT)).length,
          1
        )
        // Held past a whole lease: only renewals on the lease connection kept it.
        assert.isAbove(HOLD_MS, Duration.toMillis(LEASE))
        assert.isAbove(lowest, 0)
      }).pipe(Effect.scoped),
    90_000
  )
})
