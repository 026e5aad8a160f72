import { Clock, Context, Effect, Layer, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"

/** Undelivered calls as last sampled. */
export interface WaitingCalls {
  /** Open calls (pending or sending). */
  readonly open: number
  /** Open calls that failed at least once: waiting out an outage or a flood wait. */
  readonly retrying: number
  /** Age of the oldest open call, 0 when there is none. */
  readonly oldestSeconds: number
  /** When the sample was taken (epoch ms). */
  readonly at: number
}

const Row = Schema.Struct({ open: Schema.Number, retrying: Schema.Number, oldest_s: Schema.Number })
const decode = decodeRows(Row)

/**
 * Calls waiting to be delivered, read from the outbox by the samplers every few seconds and kept
 * here, so /health reports them without a query of its own. The query reads only `outbox_open`
 * (open rows), so its cost follows the calls waiting, never those sent.
 */
export class OutboxWaiting extends Context.Service<OutboxWaiting, {
  /** Reads the outbox now and keeps the result. */
  readonly sample: Effect.Effect<WaitingCalls, SqlError | PoolTimeout>
  /** The last sample, none before the first. */
  readonly latest: Effect.Effect<Option.Option<WaitingCalls>>
}>()("steadfast/queue/OutboxWaiting") {
  static readonly layer = Layer.effect(
    OutboxWaiting,
    Effect.gen(function*() {
      const db = yield* Database
      const sql = db.sql
      let latest = Option.none<WaitingCalls>()
      return OutboxWaiting.of({
        sample: Effect.gen(function*() {
          const rows = yield* db.withConnection(sql`
            SELECT count(*)::int AS open,
              (count(*) FILTER (WHERE last_error IS NOT NULL))::int AS retrying,
              coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_s
            FROM outbox WHERE status IN ('pending', 'sending') AND attempts >= 0`).pipe(
            decode
          )
          const row = rows[0] ?? { open: 0, retrying: 0, oldest_s: 0 }
          const sample = { open: row.open, retrying: row.retrying, oldestSeconds: row.oldest_s, at: yield* Clock.currentTimeMillis }
          latest = Option.some(sample)
          return sample
        }).pipe(Effect.withSpan("OutboxWaiting.sample")),
        latest: Effect.sync(() => latest)
      })
    })
  )
}
