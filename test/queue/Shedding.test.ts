import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Metric } from "effect"
import { OpenUpdates } from "../../src/queue/OpenUpdates.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"

const CAP = 20

describe("shedding", () => {
  it.live(
    `with MAX_OPEN_UPDATES=${CAP} open updates, POST /webhook answers 503 with Retry-After at once and stores nothing; once they are done it stores again`,
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("shedding"))
        const pg = yield* pgProbe(databaseUrl)
        yield* Effect.gen(function*() {
          const base = yield* baseUrl
          const openUpdates = yield* OpenUpdates
          assert.strictEqual(openUpdates.max, CAP)
          // Open rows not yet due, so no worker takes them while the test looks.
          yield* pg.query(`INSERT INTO inbox (update_id, chat_key, kind, payload, available_at)
             SELECT id, 'chat:' || id, 'message', jsonb_build_object('update_id', id), now() + interval '1 hour'
             FROM generate_series(990001, ${990_000 + CAP}) AS id`)
          const shedBefore = (yield* Metric.value(Metrics.webhookShed)).count
          let next = 990_500
          const shed = yield* eventually(
            "POST /webhook to be shed",
            Effect.gen(function*() {
              const startedAt = yield* Clock.currentTimeMillis
              const answer = yield* postUpdate(base, sampleUpdate({ updateId: ++next, chatId: next, text: "in the flood" }))
              return { ...answer, updateId: next, elapsedMs: (yield* Clock.currentTimeMillis) - startedAt }
            }),
            (answer) => answer.status === 503,
            { timeout: "10 seconds", interval: "100 millis" }
          )
          assert.strictEqual(shed.headers["retry-after"], "5")
          assert.isBelow(shed.elapsedMs, 1_000, "answered at once, without waiting for the database")
          assert.isUndefined(yield* inboxRow(pg, shed.updateId), "a shed update is not stored")
          assert.isAbove((yield* Metric.value(Metrics.webhookShed)).count, shedBefore)

          // The backlog is worked off: the webhook takes updates again within about a second.
          yield* pg.query(`UPDATE inbox SET status = 'done', finished_at = now() WHERE update_id BETWEEN 990001 AND 990500`)
          const accepted = yield* eventually(
            "POST /webhook to store again",
            postUpdate(base, sampleUpdate({ updateId: 990_900, chatId: 990_900, text: "after the flood" })),
            (answer) => answer.status === 200,
            { timeout: "10 seconds", interval: "100 millis" }
          )
          assert.strictEqual(accepted.status, 200)
        }).pipe(Effect.provide(testAppLayer({ databaseUrl, env: { MAX_OPEN_UPDATES: String(CAP) } })))
      }),
    60_000
  )
})
