import { Clock, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { NOTIFY_CHANNEL } from "../db/migrations/Functions.ts"
import { decodeRows } from "../db/Rows.ts"
import { Retention, type SweepOptions, type SweepResult } from "../queue/Retention.ts"

/** No inbox row has this update_id. */
export class UpdateNotFound extends Schema.TaggedError<UpdateNotFound>()("UpdateNotFound", {
  updateId: Schema.Number
}) {
  override get message() {
    return `no update with update_id ${this.updateId}`
  }
}

/** Only dead updates can be retried or discarded; the row was left as it is. */
export class NotDead extends Schema.TaggedError<NotDead>()("NotDead", {
  updateId: Schema.Number,
  status: Schema.String
}) {
  override get message() {
    return `update ${this.updateId} is ${this.status}, not dead: nothing changed`
  }
}

/** No outbox row has this id. */
export class CallNotFound extends Schema.TaggedError<CallNotFound>()("CallNotFound", {
  callId: Schema.Number
}) {
  override get message() {
    return `no Bot API call with id ${this.callId}`
  }
}

/** Only failed or expired calls can be retried or discarded; the row was left as it is. */
export class NotFailed extends Schema.TaggedError<NotFailed>()("NotFailed", {
  callId: Schema.Number,
  status: Schema.String
}) {
  override get message() {
    return `call ${this.callId} is ${this.status}, not failed or expired: nothing changed`
  }
}

export const INBOX_STATUSES = ["pending", "processing", "done", "skipped", "dead", "discarded"] as const
export const OUTBOX_STATUSES = ["pending", "sending", "sent", "failed", "expired", "discarded"] as const

const StatusCount = Schema.Struct({
  status: Schema.String,
  n: Schema.Number,
  backoff: Schema.Number,
  expired: Schema.Number
})
const OldestPending = Schema.Struct({ update_id: Schema.String, age_ms: Schema.Number })
const FailureRow = Schema.Struct({
  error: Schema.String,
  first_attempt: Schema.Number,
  last_attempt: Schema.Number,
  times: Schema.Number,
  first_at: Schema.String,
  last_at: Schema.String
})
/** The columns every view of an update starts with. */
const updateColumns = {
  update_id: Schema.String,
  status: Schema.String,
  kind: Schema.String,
  chat_key: Schema.String,
  attempts: Schema.Number,
  received_at: Schema.String
}
const UpdateRow = Schema.Struct({
  ...updateColumns,
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
  update_id: Schema.NullOr(Schema.String),
  chat_key: Schema.String,
  method: Schema.String,
  status: Schema.String,
  attempts: Schema.Number,
  created_at: Schema.String,
  created_ago_ms: Schema.Number,
  last_error: Schema.NullOr(Schema.String)
})
const UpdateListRow = Schema.Struct({
  ...updateColumns,
  age_ms: Schema.Number,
  last_error: Schema.NullOr(Schema.String)
})
const IdRow = Schema.Struct({ id: Schema.String })
const StatusRow = Schema.Struct({ id: Schema.String, status: Schema.String })
const ExistsRow = Schema.Struct({ present: Schema.Boolean })

export interface Stats {
  readonly inbox: Record<string, number>
  /** Pending rows waiting out a retry backoff. */
  readonly inboxBackoff: number
  /** Processing rows whose lease has run out (their instance died; they will be re-claimed). */
  readonly inboxExpired: number
  readonly oldestPending: Option.Option<{ readonly updateId: string; readonly ageMs: number }>
  readonly outbox: Record<string, number>
}

/** One run of identical failures: attempts first_attempt..last_attempt, `times` in all. */
export type Failure = typeof FailureRow.Type

export type CallDetails = typeof OutboxRow.Type & { readonly history: ReadonlyArray<Failure> }

export type UpdateDetails = typeof UpdateRow.Type & {
  readonly history: ReadonlyArray<Failure>
  readonly calls: ReadonlyArray<CallDetails>
}

export type UpdateListItem = typeof UpdateListRow.Type
export type CallListItem = typeof OutboxRow.Type

export interface ListFilter {
  readonly status: Option.Option<string>
  readonly kind: Option.Option<string>
  /** A chat_key (`chat:42`) or a chat id (`42`). */
  readonly chat: Option.Option<string>
  /** Received (updates) or created (calls) longer ago than this. */
  readonly olderThan: Option.Option<Duration.Duration>
  readonly limit: number
}

/** How requeued dead updates ended up after waiting. */
export interface Settled {
  readonly done: ReadonlyArray<string>
  readonly diedAgain: ReadonlyArray<string>
  readonly open: ReadonlyArray<string>
}

/** Sorts numeric id strings (bigints) numerically. */
const byNumericId = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0)

const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`

/** What an operator can look at and change in the inbox and outbox. */
export class Operations extends Context.Service<Operations, {
  readonly stats: Effect.Effect<Stats, SqlError | PoolTimeout>
  readonly listUpdates: (filter: ListFilter) => Effect.Effect<ReadonlyArray<UpdateListItem>, SqlError | PoolTimeout>
  readonly listCalls: (filter: ListFilter) => Effect.Effect<ReadonlyArray<CallListItem>, SqlError | PoolTimeout>
  readonly show: (updateId: number) => Effect.Effect<UpdateDetails, UpdateNotFound | SqlError | PoolTimeout>
  readonly showCall: (callId: number) => Effect.Effect<CallDetails, CallNotFound | SqlError | PoolTimeout>
  /** Requeues one dead update; returns its id. */
  readonly retry: (updateId: number) => Effect.Effect<string, UpdateNotFound | NotDead | SqlError | PoolTimeout>
  /** Requeues every dead update; returns their ids in order. */
  readonly retryAllDead: Effect.Effect<ReadonlyArray<string>, SqlError | PoolTimeout>
  /** Waits up to `wait` until the given updates are finished; how each one ended. */
  readonly awaitSettled: (ids: ReadonlyArray<string>, wait: Duration.Duration) => Effect.Effect<Settled, SqlError | PoolTimeout>
  /** Marks one dead update discarded: never run again, still deduplicating its redeliveries. */
  readonly discard: (updateId: number) => Effect.Effect<string, UpdateNotFound | NotDead | SqlError | PoolTimeout>
  /** Requeues one failed or expired call; returns its id. */
  readonly retryCall: (callId: number) => Effect.Effect<string, CallNotFound | NotFailed | SqlError | PoolTimeout>
  /** Requeues every expired call (given up during an outage); returns their ids in order. */
  readonly retryAllExpired: Effect.Effect<ReadonlyArray<string>, SqlError | PoolTimeout>
  /** Marks one failed or expired call discarded: kept for the record, never sent. */
  readonly discardCall: (callId: number) => Effect.Effect<string, CallNotFound | NotFailed | SqlError | PoolTimeout>
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
      // runnable only when that lease ends, keeping one update at a time per chat; it then runs
      // before every later update of its chat still open (the claim takes a chat's oldest open one).
      const requeue = (where: Fragment) =>
        db.transaction(Effect.gen(function*() {
          const ids = yield* sql`
          UPDATE inbox SET status = 'pending', attempts = 0, finished_at = NULL, locked_until = NULL, lease_id = NULL,
            available_at = greatest(now(), (
              SELECT max(running.locked_until) FROM inbox running
              WHERE running.chat_key = inbox.chat_key AND running.status = 'processing'))
          WHERE status = 'dead' AND ${where}
          RETURNING update_id::text AS id`.pipe(decodeRows(IdRow))
          // Delivered at commit: a running dispatcher claims the rows at once instead of at its next poll.
          if (ids.length > 0) yield* sql`SELECT pg_notify(${NOTIFY_CHANNEL}, 'inbox')`
          return ids.map((row) => row.id).sort(byNumericId)
        }))

      // The same for calls: a call of a chat is sent only after the chat's earlier open calls, so a
      // requeued call goes before its chat's later ones still waiting, and (as above) not beside one
      // being sent now. Its age starts over, or OUTBOX_MAX_AGE would expire it again at once.
      const requeueCalls = (where: Fragment) =>
        db.transaction(Effect.gen(function*() {
          const ids = yield* sql`
          UPDATE outbox SET status = 'pending', attempts = 0, created_at = now(), locked_until = NULL, lease_id = NULL,
            owner = NULL,
            available_at = greatest(now(), (
              SELECT max(running.locked_until) FROM outbox running
              WHERE running.chat_key = outbox.chat_key AND running.status = 'sending'))
          WHERE status IN ('failed', 'expired') AND ${where}
          RETURNING id::text AS id`.pipe(decodeRows(IdRow))
          if (ids.length > 0) yield* sql`SELECT pg_notify(${NOTIFY_CHANNEL}, 'outbox')`
          return ids.map((row) => row.id).sort(byNumericId)
        }))

      // Read-only commands never migrate: a database of an older version may lack the history.
      const hasHistory = db.withConnection(sql`SELECT to_regclass('failure_history') IS NOT NULL AS present`).pipe(
        decodeRows(ExistsRow),
        Effect.map((rows) => rows[0]?.present === true)
      )
      const history = (column: "update_id" | "outbox_id", id: string) =>
        Effect.flatMap(hasHistory, (present) =>
          !present ? Effect.succeed([]) : db.withConnection(sql`
            SELECT error, first_attempt, last_attempt, times,
              to_char(first_at AT TIME ZONE 'UTC', ${iso}) AS first_at, to_char(last_at AT TIME ZONE 'UTC', ${iso}) AS last_at
            FROM failure_history WHERE ${sql(column)} = ${id}::bigint ORDER BY id`).pipe(decodeRows(FailureRow)))

      const callColumns = sql`id::text AS id, update_id::text AS update_id, chat_key, method, status, attempts, last_error,
        to_char(created_at AT TIME ZONE 'UTC', ${iso}) AS created_at,
        (extract(epoch FROM now() - created_at) * 1000)::float8 AS created_ago_ms`
      const withHistory = (call: typeof OutboxRow.Type) => Effect.map(history("outbox_id", call.id), (history) => ({ ...call, history }))

      const chatKey = (chat: string) => /^-?\d+$/.test(chat) ? `chat:${chat}` : chat
      const filters = (filter: ListFilter, timeColumn: "received_at" | "created_at", kindColumn: "kind" | "method") =>
        sql.and([
          ...Option.toArray(Option.map(filter.status, (status) => sql`status = ${status}`)),
          ...Option.toArray(Option.map(filter.kind, (kind) => sql`${sql(kindColumn)} = ${kind}`)),
          ...Option.toArray(Option.map(filter.chat, (chat) => sql`chat_key = ${chatKey(chat)}`)),
          ...Option.toArray(
            Option.map(filter.olderThan, (age) => sql`${sql(timeColumn)} < now() - ${Duration.toMillis(age)} * interval '1 millisecond'`)
          )
        ])

      const statusOf = (table: "inbox" | "outbox", id: number) =>
        db.withConnection(
          table === "inbox"
            ? sql`SELECT update_id::text AS id, status FROM inbox WHERE update_id = ${id}`
            : sql`SELECT id::text AS id, status FROM outbox WHERE id = ${id}`
        ).pipe(decodeRows(StatusRow), Effect.map((rows) => Option.fromNullishOr(rows[0])))

      return Operations.of({
        stats: Effect.gen(function*() {
          const inbox = yield* db.withConnection(sql`
          SELECT status, count(*)::int AS n,
            (count(*) FILTER (WHERE status = 'pending' AND available_at > now()))::int AS backoff,
            (count(*) FILTER (WHERE status = 'processing' AND locked_until < now()))::int AS expired
          FROM inbox GROUP BY status`).pipe(decodeRows(StatusCount))
          const oldest = yield* db.withConnection(sql`
          SELECT update_id::text AS update_id, (extract(epoch FROM now() - received_at) * 1000)::float8 AS age_ms
          FROM inbox WHERE status = 'pending' ORDER BY received_at, update_id LIMIT 1`).pipe(
            decodeRows(OldestPending)
          )
          const outbox = yield* db.withConnection(sql`
          SELECT status, count(*)::int AS n,
            (count(*) FILTER (WHERE status = 'pending' AND available_at > now()))::int AS backoff, 0 AS expired
          FROM outbox GROUP BY status`).pipe(
            decodeRows(StatusCount)
          )
          return {
            inbox: Object.fromEntries(inbox.map((row) => [row.status, row.n])),
            inboxBackoff: inbox.reduce((sum, row) => sum + row.backoff, 0),
            inboxExpired: inbox.reduce((sum, row) => sum + row.expired, 0),
            oldestPending: Option.map(Option.fromNullishOr(oldest[0]), (row) => ({ updateId: row.update_id, ageMs: row.age_ms })),
            outbox: Object.fromEntries(outbox.map((row) => [row.status, row.n]))
          }
        }).pipe(Effect.withSpan("Operations.stats")),

        listUpdates: Effect.fn("Operations.listUpdates")(function*(filter) {
          return yield* db.withConnection(sql`
          SELECT update_id::text AS update_id, status, kind, chat_key, attempts, last_error,
            to_char(received_at AT TIME ZONE 'UTC', ${iso}) AS received_at,
            (extract(epoch FROM now() - received_at) * 1000)::float8 AS age_ms
          FROM inbox WHERE ${filters(filter, "received_at", "kind")}
          ORDER BY update_id DESC LIMIT ${filter.limit}`).pipe(decodeRows(UpdateListRow))
        }),

        listCalls: Effect.fn("Operations.listCalls")(function*(filter) {
          return yield* db.withConnection(sql`
          SELECT ${callColumns} FROM outbox WHERE ${filters(filter, "created_at", "method")}
          ORDER BY id DESC LIMIT ${filter.limit}`).pipe(decodeRows(OutboxRow))
        }),

        show: Effect.fn("Operations.show")(function*(updateId) {
          const rows = yield* db.withConnection(sql`
          SELECT update_id::text AS update_id, status, kind, chat_key, attempts, last_error, trace_id, payload,
            to_char(received_at AT TIME ZONE 'UTC', ${iso}) AS received_at,
            (extract(epoch FROM now() - received_at) * 1000)::float8 AS received_ago_ms,
            to_char(available_at AT TIME ZONE 'UTC', ${iso}) AS available_at,
            (extract(epoch FROM available_at - now()) * 1000)::float8 AS available_in_ms,
            to_char(finished_at AT TIME ZONE 'UTC', ${iso}) AS finished_at
          FROM inbox WHERE update_id = ${updateId}`).pipe(decodeRows(UpdateRow))
          const row = rows[0]
          if (row === undefined) return yield* new UpdateNotFound({ updateId })
          const calls = yield* db.withConnection(sql`
          SELECT ${callColumns} FROM outbox WHERE update_id = ${updateId} ORDER BY id`).pipe(decodeRows(OutboxRow))
          return {
            ...row,
            history: yield* history("update_id", row.update_id),
            calls: yield* Effect.forEach(calls, withHistory)
          }
        }),

        showCall: Effect.fn("Operations.showCall")(function*(callId) {
          const rows = yield* db.withConnection(sql`SELECT ${callColumns} FROM outbox WHERE id = ${callId}`).pipe(
            decodeRows(OutboxRow)
          )
          const row = rows[0]
          if (row === undefined) return yield* new CallNotFound({ callId })
          return yield* withHistory(row)
        }),

        retry: Effect.fn("Operations.retry")(function*(updateId) {
          const ids = yield* requeue(sql`update_id = ${updateId}`)
          const id = ids[0]
          if (id !== undefined) return id
          const row = yield* statusOf("inbox", updateId)
          return yield* Option.isNone(row) ? new UpdateNotFound({ updateId }) : new NotDead({ updateId, status: row.value.status })
        }),

        retryAllDead: requeue(sql.literal("true")).pipe(Effect.withSpan("Operations.retryAllDead")),

        awaitSettled: Effect.fn("Operations.awaitSettled")(function*(ids, wait) {
          const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(wait)
          while (true) {
            const rows = ids.length === 0 ? [] : yield* db.withConnection(sql`
              SELECT update_id::text AS id, status FROM inbox WHERE update_id = ANY(${ids}::bigint[])`).pipe(
              decodeRows(StatusRow)
            )
            const open = rows.filter((row) => row.status === "pending" || row.status === "processing")
            if (open.length === 0 || (yield* Clock.currentTimeMillis) >= deadline) {
              const of = (statuses: ReadonlyArray<string>) =>
                rows.filter((row) => statuses.includes(row.status)).map((row) => row.id).sort(byNumericId)
              return { done: of(["done", "skipped"]), diedAgain: of(["dead"]), open: of(["pending", "processing"]) }
            }
            yield* Effect.sleep("200 millis")
          }
        }),

        discard: Effect.fn("Operations.discard")(function*(updateId) {
          // The row stays: its update_id keeps a redelivery from being stored and run again.
          const rows = yield* db.withConnection(sql`
            UPDATE inbox SET status = 'discarded' WHERE update_id = ${updateId} AND status = 'dead'
            RETURNING update_id::text AS id`).pipe(decodeRows(IdRow))
          if (rows[0] !== undefined) return rows[0].id
          const row = yield* statusOf("inbox", updateId)
          return yield* Option.isNone(row) ? new UpdateNotFound({ updateId }) : new NotDead({ updateId, status: row.value.status })
        }),

        retryCall: Effect.fn("Operations.retryCall")(function*(callId) {
          const ids = yield* requeueCalls(sql`id = ${callId}`)
          if (ids[0] !== undefined) return ids[0]
          const row = yield* statusOf("outbox", callId)
          return yield* Option.isNone(row) ? new CallNotFound({ callId }) : new NotFailed({ callId, status: row.value.status })
        }),

        retryAllExpired: requeueCalls(sql`status = 'expired'`).pipe(Effect.withSpan("Operations.retryAllExpired")),

        discardCall: Effect.fn("Operations.discardCall")(function*(callId) {
          const rows = yield* db.withConnection(sql`
            UPDATE outbox SET status = 'discarded' WHERE id = ${callId} AND status IN ('failed', 'expired')
            RETURNING id::text AS id`).pipe(decodeRows(IdRow))
          if (rows[0] !== undefined) return rows[0].id
          const row = yield* statusOf("outbox", callId)
          return yield* Option.isNone(row) ? new CallNotFound({ callId }) : new NotFailed({ callId, status: row.value.status })
        }),

        purge: (options) => Retention.sweep(options).pipe(Effect.provideService(Database, db))
      })
    })
  )
}
