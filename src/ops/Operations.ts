import { Context, Effect, Layer, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { NOTIFY_CHANNEL } from "../inbox/Inbox.ts"
import { Retention, type SweepOptions, type SweepResult } from "../inbox/Retention.ts"

/** No inbox row has this update_id. */
export class UpdateNotFound extends Schema.TaggedError<UpdateNotFound>()("UpdateNotFound", {
  updateId: Schema.Number
}) {
  override get message() {
    return `no update with update_id ${this.updateId}`
  }
}

/** Only dead updates can be retried; the row was left as it is. */
export class NotDead extends Schema.TaggedError<NotDead>()("NotDead", {
  updateId: Schema.Number,
  status: Schema.String
}) {
  override get message() {
    return `update ${this.updateId} is ${this.status}, not dead: nothing changed`
  }
}

export const INBOX_STATUSES = ["pending", "processing", "done", "skipped", "dead"] as const
export const OUTBOX_STATUSES = ["pending", "sending", "sent", "failed"] as const

const StatusCount = Schema.Struct({
  status: Schema.String,
  n: Schema.Number,
  backoff: Schema.Number,
  expired: Schema.Number
})
const OldestPending = Schema.Struct({ update_id: Schema.String, age_ms: Schema.Number })
const UpdateRow = Schema.Struct({
  update_id: Schema.String,
  status: Schema.String,
  kind: Schema.String,
  chat_key: Schema.String,
  attempts: Schema.Number,
  received_at: Schema.String,
  received_ago_ms: Schema.Number,
  available_at: Schema.String,
  available_in_ms: Schema.Number,
  finished_at: Schema.NullOr(Schema.String),
  last_error: Schema.NullOr(Schema.String),
  trace_id: Schema.NullOr(Schema.String),
  payload: Schema.Unknown
})
const OutboxRow = Schema.Struct({
  id: Schema.String,
  method: Schema.String,
  status: Schema.String,
  attempts: Schema.Number,
  last_error: Schema.NullOr(Schema.String)
})
const IdRow = Schema.Struct({ update_id: Schema.String })
const StatusRow = Schema.Struct({ status: Schema.String })

const decodeCounts = Schema.decodeUnknownEffect(Schema.Array(StatusCount))
const decodeOldest = Schema.decodeUnknownEffect(Schema.Array(OldestPending))
const decodeUpdate = Schema.decodeUnknownEffect(Schema.Array(UpdateRow))
const decodeOutbox = Schema.decodeUnknownEffect(Schema.Array(OutboxRow))
const decodeIds = Schema.decodeUnknownEffect(Schema.Array(IdRow))
const decodeStatus = Schema.decodeUnknownEffect(Schema.Array(StatusRow))

/** Rows that do not match their schema are a bug here, not something a caller can handle. */
const rowsOf = <A>(decode: (rows: unknown) => Effect.Effect<A, Schema.SchemaError>) => (rows: unknown) => Effect.orDie(decode(rows))

export interface Stats {
  readonly inbox: Record<string, number>
  /** Pending rows waiting out a retry backoff. */
  readonly inboxBackoff: number
  /** Processing rows whose lease has run out (their instance died; they will be re-claimed). */
  readonly inboxExpired: number
  readonly oldestPending: Option.Option<{ readonly updateId: string; readonly ageMs: number }>
  readonly outbox: Record<string, number>
}

export type UpdateDetails = typeof UpdateRow.Type & {
  readonly calls: ReadonlyArray<typeof OutboxRow.Type>
}

/** Sorts numeric id strings (bigints) numerically. */
const byNumericId = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0)

const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`

/** What an operator can look at and change in the inbox and outbox. */
export class Operations extends Context.Service<Operations, {
  readonly stats: Effect.Effect<Stats, SqlError | PoolTimeout>
  readonly show: (updateId: number) => Effect.Effect<UpdateDetails, UpdateNotFound | SqlError | PoolTimeout>
  /** Requeues one dead update; returns its id. */
  readonly retry: (updateId: number) => Effect.Effect<string, UpdateNotFound | NotDead | SqlError | PoolTimeout>
  /** Requeues every dead update; returns their ids in order. */
  readonly retryAllDead: Effect.Effect<ReadonlyArray<string>, SqlError | PoolTimeout>
  readonly purge: (options: SweepOptions) => Effect.Effect<SweepResult, SqlError | PoolTimeout>
}>()("steadfast/ops/Operations") {
  static readonly layerNoDeps = Layer.effect(
    Operations,
    Effect.gen(function*() {
      const db = yield* Database
      const sql = db.sql
      const iso = sql.literal(ISO)

      // A requeued update starts over: no attempts used, runnable now. last_error is kept so the
      // reason it died stays visible until it is next finished (Inbox.finish clears it) or fails again.
      // While it was dead, later updates of its chat went ahead; one of them may be running now, and
      // the claim query only waits for *earlier* updates of a chat. So the requeued update becomes
      // runnable only when that lease ends, keeping one update at a time per chat.
      const requeue = (where: Fragment) =>
        db.transaction(Effect.gen(function*() {
          const ids = yield* sql`
          UPDATE inbox SET status = 'pending', attempts = 0, finished_at = NULL, locked_until = NULL, lease_id = NULL,
            available_at = greatest(now(), (
              SELECT max(running.locked_until) FROM inbox running
              WHERE running.chat_key = inbox.chat_key AND running.status = 'processing'))
          WHERE status = 'dead' AND ${where}
          RETURNING update_id::text AS update_id`.pipe(Effect.flatMap(rowsOf(decodeIds)))
          // Delivered at commit: a running dispatcher claims the rows at once instead of at its next poll.
          if (ids.length > 0) yield* sql`SELECT pg_notify(${NOTIFY_CHANNEL}, 'inbox')`
          return ids.map((row) => row.update_id).sort(byNumericId)
        }))

      return Operations.of({
        stats: Effect.gen(function*() {
          const inbox = yield* db.withConnection(sql`
          SELECT status, count(*)::int AS n,
            (count(*) FILTER (WHERE status = 'pending' AND available_at > now()))::int AS backoff,
            (count(*) FILTER (WHERE status = 'processing' AND locked_until < now()))::int AS expired
          FROM inbox GROUP BY status`).pipe(Effect.flatMap(rowsOf(decodeCounts)))
          const oldest = yield* db.withConnection(sql`
          SELECT update_id::text AS update_id, (extract(epoch FROM now() - received_at) * 1000)::float8 AS age_ms
          FROM inbox WHERE status = 'pending' ORDER BY received_at, update_id LIMIT 1`).pipe(
            Effect.flatMap(rowsOf(decodeOldest))
          )
          const outbox = yield* db.withConnection(sql`
          SELECT status, count(*)::int AS n, 0 AS backoff, 0 AS expired FROM outbox GROUP BY status`).pipe(
            Effect.flatMap(rowsOf(decodeCounts))
          )
          return {
            inbox: Object.fromEntries(inbox.map((row) => [row.status, row.n])),
            inboxBackoff: inbox.reduce((sum, row) => sum + row.backoff, 0),
            inboxExpired: inbox.reduce((sum, row) => sum + row.expired, 0),
            oldestPending: Option.map(Option.fromNullishOr(oldest[0]), (row) => ({ updateId: row.update_id, ageMs: row.age_ms })),
            outbox: Object.fromEntries(outbox.map((row) => [row.status, row.n]))
          }
        }).pipe(Effect.withSpan("Operations.stats")),

        show: Effect.fn("Operations.show")(function*(updateId) {
          const rows = yield* db.withConnection(sql`
          SELECT update_id::text AS update_id, status, kind, chat_key, attempts, last_error, trace_id, payload,
            to_char(received_at AT TIME ZONE 'UTC', ${iso}) AS received_at,
            (extract(epoch FROM now() - received_at) * 1000)::float8 AS received_ago_ms,
            to_char(available_at AT TIME ZONE 'UTC', ${iso}) AS available_at,
            (extract(epoch FROM available_at - now()) * 1000)::float8 AS available_in_ms,
            to_char(finished_at AT TIME ZONE 'UTC', ${iso}) AS finished_at
          FROM inbox WHERE update_id = ${updateId}`).pipe(Effect.flatMap(rowsOf(decodeUpdate)))
          const row = rows[0]
          if (row === undefined) return yield* new UpdateNotFound({ updateId })
          const calls = yield* db.withConnection(sql`
          SELECT id::text AS id, method, status, attempts, last_error FROM outbox
          WHERE update_id = ${updateId} ORDER BY id`).pipe(Effect.flatMap(rowsOf(decodeOutbox)))
          return { ...row, calls }
        }),

        retry: Effect.fn("Operations.retry")(function*(updateId) {
          const ids = yield* requeue(sql`update_id = ${updateId}`)
          const id = ids[0]
          if (id !== undefined) return id
          const rows = yield* db.withConnection(sql`SELECT status FROM inbox WHERE update_id = ${updateId}`).pipe(
            Effect.flatMap(rowsOf(decodeStatus))
          )
          const row = rows[0]
          return yield* row === undefined ? new UpdateNotFound({ updateId }) : new NotDead({ updateId, status: row.status })
        }),

        retryAllDead: requeue(sql.literal("true")).pipe(Effect.withSpan("Operations.retryAllDead")),

        purge: (options) => Retention.sweep(options).pipe(Effect.provideService(Database, db))
      })
    })
  )
}
