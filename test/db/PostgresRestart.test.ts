import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { Database } from "../../src/db/Database.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { answeredCount, assertAnsweredInOrder, interleavedPlan, makePostStats, postPlan, slicePlan } from "../support/Load.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { awaitIdlePool } from "../support/FaultyApp.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

const CHATS = 10
const PER_CHAT = 30

/** The updates of each chat from index `from` up to `to` (exclusive). */

describe("PostgreSQL stopped and started under load", () => {
  it.live(
    "while PostgreSQL is down the webhook answers 503 and nothing is lost; once it is back the same process answers every update, in per-chat order",
    () =>
      Effect.gen(function*() {
        const cluster = yield* Effect.acquireRelease(Effect.promise(() => startCluster()), (cluster) =>
          Effect.promise(() => cluster.dispose()))
        const databaseUrl = yield* Effect.promise(() =>
          createDatabase(cluster.url("postgres"), "restart")
        )
        // In-process (a child process adds seconds of start-up on a busy machine): the same
        // layer must recover, so "without a restart" is the app never being rebuilt.
        const app = yield* Layer.build(testAppLayer({
          databaseUrl,
          env: { UPDATE_TIMEOUT_MS: "2000", SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }
        }))
        const standIn = Context.get(app, BotApiRecorder)
        const db = Context.get(app, Database)
        const serviceUrl = yield* Effect.provideContext(baseUrl, app)
        const base = Effect.succeed(serviceUrl)
        // Slow answers keep Bot API calls in flight when the database goes away.
        yield* standIn.setDelay(30)

        const plan = interleavedPlan({ chats: CHATS, perChat: PER_CHAT, firstUpdateId: 60_000, firstChatId: 950_000, seed: 7 })
        const stats = makePostStats()

        // Before: a third of the load, partly answered.
        yield* postPlan(base, slicePlan(plan, 0, 10), stats)
        yield* standIn.awaitCalls((calls) => answeredCount(plan, calls) >= 20, "30 seconds")

        // During: the next third is posted while PostgreSQL stops under it; posters retry.
        const during = yield* Effect.forkChild(postPlan(base, slicePlan(plan, 10, 20), stats))
        yield* Effect.promise(() => cluster.stop())
        yield* eventually("503 answers while PostgreSQL is down", Effect.sync(() => stats.statuses.get(503) ?? 0), (n) => n >= 5, {
          timeout: "30 seconds"
        })
        const health = yield* Effect.promise(() => fetch(`${serviceUrl}/health`).then((response) => response.status))
        assert.strictEqual(health, 503, "readiness fails while the database is down")
        const live = yield* Effect.promise(() => fetch(`${serviceUrl}/health/live`).then((response) => response.status))
        assert.strictEqual(live, 200, "liveness stays up: the process needs no restart")

        // After: PostgreSQL is back; the same process must recover on its own.
        yield* Effect.promise(() => cluster.start())
        yield* Fiber.join(during)
        yield* postPlan(base, slicePlan(plan, 20, PER_CHAT), stats)
        // A delivery cut off by the outage may be repeated; order must hold regardless.
        yield* assertAnsweredInOrder(plan, standIn, yield* pgProbe(databaseUrl), { timeout: "45 seconds", repeats: "immediate" })
        yield* awaitIdlePool(db)
      }),
    180_000
  )
})
