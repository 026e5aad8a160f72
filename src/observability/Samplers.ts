import { Effect, Layer, Metric, Schedule } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Database } from "../db/Database.ts"
import * as Metrics from "./Metrics.ts"

const SAMPLE_EVERY = "5 seconds"

/**
 * Gauges that need a look at the database or the runtime: inbox and outbox backlog, the oldest
 * pending update's age, dead letters, event-loop delay. One cheap query every few seconds; a
 * failure (database down) skips a sample and never stops the fiber.
 */
export const Samplers = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    const db = yield* Database
    const sql = db.sql
    const histogram = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const h = monitorEventLoopDelay({ resolution: 20 })
        h.enable()
        return h
      }),
      (h) => Effect.sync(() => h.disable())
    )

    const sample = Effect.gen(function*() {
      yield* Metric.update(Metrics.eventLoopDelay, histogram.percentile(99) / 1e9)
      histogram.reset()
      const rows = yield* db.withConnection(
        sql<{ backlog: number; oldest: number | null; dead: number; outbox: number }>`
          SELECT
            (SELECT count(*)::int FROM inbox WHERE status IN ('pending', 'processing')) AS backlog,
            (SELECT extract(epoch FROM now() - min(received_at))::float8 FROM inbox WHERE status IN ('pending', 'processing')) AS oldest,
            (SELECT count(*)::int FROM inbox WHERE status = 'dead') AS dead,
            (SELECT count(*)::int FROM outbox WHERE status IN ('pending', 'sending')) AS outbox`,
        "1 second"
      )
      const row = rows[0]
      if (row === undefined) return
      yield* Metric.update(Metrics.inboxBacklog, row.backlog)
      yield* Metric.update(Metrics.inboxOldestAge, row.oldest ?? 0)
      yield* Metric.update(Metrics.inboxDead, row.dead)
      yield* Metric.update(Metrics.outboxBacklog, row.outbox)
    }).pipe(Effect.catchCause(() => Effect.void))

    yield* sample.pipe(Effect.repeat(Schedule.spaced(SAMPLE_EVERY)), Effect.forkScoped)
  }))
}
