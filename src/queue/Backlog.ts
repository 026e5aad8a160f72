import { Context, Duration, Effect, Layer, Metric, Schedule, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"
import * as Metrics from "../observability/Metrics.ts"
import { OutboxWaiting } from "./OutboxWaiting.ts"

export interface BacklogCounts {
  readonly pending: number
  readonly oldestSeconds: number
  readonly dead: number
  readonly outbox: number
}

/**
 * What `read` asks. Each part reads only a partial index (inbox_open, inbox_dead,
 * outbox_open), so its cost follows the open and dead rows, never the finished ones.
 */
export const BACKLOG_QUERY = `
  SELECT
    (SELECT count(*)::int FROM inbox WHERE status IN ('pending', 'processing') AND attempts >= 0) AS pending,
    (SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8 FROM inbox
     WHERE status IN ('pending', 'processing') AND attempts >= 0) AS oldest,
    (SELECT count(*)::int FROM inbox WHERE status = 'dead') AS dead,
    (SELECT count(*)::int FROM outbox WHERE status IN ('pending', 'sending') AND attempts >= 0) AS outbox`

const decodeCounts = decodeRows(
  Schema.Struct({ pending: Schema.Number, oldest: Schema.Number, dead: Schema.Number, outbox: Schema.Number })
)

const SAMPLE_EVERY = "5 seconds"

/**
 * Work waiting in the queue's tables: open updates, the oldest one's age, dead letters, open
 * outbox calls. /health reads it on demand; the layer also samples it, with the outbox's waiting
 * calls, into gauges every few seconds (a failure, database down, skips a sample and never stops
 * the fiber).
 */
export class Backlog extends Context.Service<Backlog, {
  readonly read: (wait: Duration.Input) => Effect.Effect<BacklogCounts, SqlError | PoolTimeout>
}>()("steadfast/queue/Backlog") {
  static readonly layer = Layer.effect(
    Backlog,
    Effect.gen(function*() {
      const db = yield* Database
      const outboxWaiting = yield* OutboxWaiting
      const read = (wait: Duration.Input) =>
        db.withConnection(db.sql.unsafe(BACKLOG_QUERY), wait, "health").pipe(
          decodeCounts,
          Effect.map(([row]) => ({
            pending: row?.pending ?? 0,
            oldestSeconds: row?.oldest ?? 0,
            dead: row?.dead ?? 0,
            outbox: row?.outbox ?? 0
          }))
        )
      // A counter appears in the export only once it was updated: start these at 0 so that a
      // dashboard sees "no timeouts / no 429s yet" rather than a missing series.
      yield* Metric.update(Metrics.connectionTimeouts, 0)
      yield* Metric.update(Metrics.botApiRateLimited, 0)
      yield* Metric.update(Metrics.outboxCallsFailed, 0)
      yield* Metric.update(Metrics.outboxCallsDiscarded, 0)
      const sampleInbox = read("1 second").pipe(
        Effect.flatMap((backlog) =>
          Effect.all([
            Metric.update(Metrics.inboxBacklog, backlog.pending),
            Metric.update(Metrics.inboxOldestAge, backlog.oldestSeconds),
            Metric.update(Metrics.inboxDead, backlog.dead),
            Metric.update(Metrics.outboxBacklog, backlog.outbox)
          ], { discard: true })
        ),
        Effect.catchCause(() => Effect.void)
      )
      // Apart from the inbox's sample, so that either one failing does not hide the other.
      const sampleOutbox = outboxWaiting.sample.pipe(
        Effect.flatMap((waiting) =>
          Effect.andThen(
            Metric.update(Metrics.outboxWaiting, waiting.retrying),
            Metric.update(Metrics.outboxOldestAge, waiting.oldestSeconds)
          )
        ),
        Effect.catchCause(() => Effect.void)
      )
      yield* Effect.andThen(sampleInbox, sampleOutbox).pipe(Effect.repeat(Schedule.spaced(SAMPLE_EVERY)), Effect.forkScoped)
      return Backlog.of({ read })
    })
  )
}
