import { Context, Duration, Effect, Layer, Option, Schedule, Schema, type Tracer } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { makeBatcher } from "../db/Batcher.ts"
import type { OutgoingCall } from "../outbox/Outbox.ts"
import { Database, type PoolTimeout } from "../db/Database.ts"

/** The channel every instance LISTENs on; payload `inbox` or `outbox` says what has new work. */
export const NOTIFY_CHANNEL = "steadfast"

export interface NewUpdate {
  readonly updateId: number
  readonly chatKey: string
  readonly kind: string
  readonly json: string
  readonly skipped: boolean
  readonly traceparent: string | null
}

interface StoreRequest {
  readonly update: NewUpdate
  readonly span: Option.Option<Tracer.AnySpan>
}

export const ClaimedUpdate = Schema.Struct({
  update_id: Schema.Union([Schema.BigInt, Schema.Number, Schema.String]),
  kind: Schema.String,
  payload: Schema.Unknown,
  attempts: Schema.Number,
  lease_id: Schema.String,
  traceparent: Schema.NullOr(Schema.String)
})
export interface Claimed {
  readonly updateId: number
  readonly kind: string
  readonly payload: unknown
  readonly attempts: number
  readonly leaseId: string
  readonly traceparent: string | null
}

const decodeClaimed = Schema.decodeUnknownEffect(Schema.Array(ClaimedUpdate))

export type FailureOutcome = "retry" | "dead"

export interface Backlog {
  readonly pending: number
  readonly oldestSeconds: number
  readonly dead: number
  readonly outbox: number
}

/**
 * What `backlog` asks. Each part reads only a partial index (inbox_open, inbox_dead,
 * outbox_open), so its cost follows the open and dead rows, never the finished ones.
 */
export const BACKLOG_QUERY = `
  SELECT
    (SELECT count(*)::int FROM inbox WHERE status IN ('pending', 'processing')) AS pending,
    (SELECT extract(epoch FROM now() - min(received_at))::float8 FROM inbox WHERE status IN ('pending', 'processing')) AS oldest,
    (SELECT count(*)::int FROM inbox WHERE status = 'dead') AS dead,
    (SELECT count(*)::int FROM outbox WHERE status IN ('pending', 'sending')) AS outbox`

/** Kinds Telegram needs answered within seconds jump the queue (they have their own chat key, so order is kept). */
export const URGENT_KINDS: ReadonlySet<string> = new Set(["pre_checkout_query", "shipping_query"])
const priorityOf = (kind: string) => (URGENT_KINDS.has(kind) ? 1 : 0)

/**
 * The durable inbox. Updates are claimed with a lease; a chat's next update is claimable only
 * once every earlier update of that chat is finished (done, skipped or dead), which gives strict
 * per-chat order across any number of instances sharing the table.
 *
 * Effect's `PersistedQueue` was considered: it claims the oldest visible element of a queue with
 * SKIP LOCKED, but has no notion of a key whose earlier element is still in flight, so it cannot
 * keep one chat's updates in order while other chats run concurrently.
 */
export class Inbox extends Context.Service<Inbox, {
  /** Stores an update unless its update_id is already stored; true when it was new. */
  readonly store: (update: NewUpdate) => Effect.Effect<boolean, SqlError | PoolTimeout>
  /** Claims up to `limit` runnable updates, at most one per chat, leased for `lease`. */
  readonly claim: (limit: number, lease: Duration.Duration) => Effect.Effect<ReadonlyArray<Claimed>, SqlError | PoolTimeout>
  /**
   * Inside the handler's transaction: marks the update finished and queues its Bot API calls, if
   * the lease is still ours. False means another instance took the update over: roll back.
   */
  readonly finish: (
    update: Claimed,
    status: "done" | "skipped",
    calls: ReadonlyArray<OutgoingCall>,
    traceId: string | null
  ) => Effect.Effect<boolean, SqlError>
  /** Records a failed attempt: back to pending after `backoff`, or dead once `maxAttempts` is used up. */
  readonly fail: (
    update: Claimed,
    error: string,
    maxAttempts: number,
    backoff: Duration.Duration,
    traceId: string | null
  ) => Effect.Effect<FailureOutcome | undefined, SqlError | PoolTimeout>
  /** Work waiting: open updates, the oldest one's age, dead letters, open outbox calls. */
  readonly backlog: (wait: Duration.Input) => Effect.Effect<Backlog, SqlError | PoolTimeout>
  /** Returns an interrupted update to pending without counting the attempt. */
  readonly release: (update: Claimed) => Effect.Effect<void, SqlError | PoolTimeout>
}>()("steadfast/inbox/Inbox") {
  static readonly layer = Layer.effect(Inbox, Effect.gen(function*() {
    const db = yield* Database
    const sql = db.sql

    // (The driver cannot encode null array elements: an absent traceparent travels as "".)
    // Concurrent webhook requests are stored together: one multi-row INSERT (and one NOTIFY) per
    // batch, on one connection, instead of one transaction per request competing for the pool.
    const insertBatch = (batch: ReadonlyArray<StoreRequest>) =>
      db.withConnection(sql<{ update_id: string }>`
        WITH input AS (
          SELECT * FROM unnest(
            ${batch.map((r) => r.update.updateId)}::bigint[], ${batch.map((r) => r.update.chatKey)}::text[],
            ${batch.map((r) => r.update.kind)}::text[], ${batch.map((r) => r.update.json)}::text[],
            ${batch.map((r) => (r.update.skipped ? "skipped" : "pending"))}::text[],
            ${batch.map((r) => priorityOf(r.update.kind))}::smallint[], ${batch.map((r) => r.update.traceparent ?? "")}::text[]
          ) AS t(update_id, chat_key, kind, payload, status, priority, traceparent)
        ), inserted AS (
          INSERT INTO inbox (update_id, chat_key, kind, payload, status, priority, traceparent, finished_at)
          SELECT update_id, chat_key, kind, payload::jsonb, status, priority, nullif(traceparent, ''),
                 CASE WHEN status = 'skipped' THEN now() END
          FROM input
          ON CONFLICT (update_id) DO NOTHING
          RETURNING update_id, status
        ), notified AS (
          SELECT pg_notify(${NOTIFY_CHANNEL}, 'inbox') WHERE EXISTS (SELECT 1 FROM inserted WHERE status = 'pending')
        )
        SELECT update_id::text AS update_id, (SELECT count(*) FROM notified) AS notified FROM inserted`, undefined, "ingress").pipe(
        Effect.map((rows) => {
          const inserted = new Set(rows.map((row) => row.update_id))
          // Of two requests for one update_id in a batch, only the first counts as new.
          return batch.map((request, index) =>
            inserted.has(String(request.update.updateId)) &&
            batch.findIndex((other) => other.update.updateId === request.update.updateId) === index
          )
        }),
        // Traced under the first request's span and linked from the others'.
        (insert) => {
          const spans = batch.flatMap((request) => Option.toArray(request.span))
          return Effect.withSpan(insert, "Inbox.insert", {
            ...(spans[0] === undefined ? { root: true } : { parent: spans[0] }),
            links: spans.slice(1).map((span) => ({ span, attributes: {} })),
            attributes: { "steadfast.batch_size": batch.length }
          })
        }
      )
    const storeBatched = yield* makeBatcher({ run: insertBatch, max: 200, writers: 2 })

    // The claim queries need current statistics: without them PostgreSQL plans a scan of every open
    // row, and autovacuum wakes only once a minute, far too late for a burst. Cheap when idle.
    yield* db.withConnection(Effect.gen(function*() {
      const stale = yield* sql<{ relname: string }>`
        SELECT relname FROM pg_stat_user_tables
        WHERE relname IN ('inbox', 'outbox') AND n_mod_since_analyze > greatest(500, n_live_tup / 5)`
      for (const { relname } of stale) yield* sql.unsafe(`ANALYZE ${relname === "inbox" ? "inbox" : "outbox"}`)
    }), "1 second").pipe(
      Effect.catchCause((cause) => Effect.logDebug("refreshing queue statistics failed", cause)),
      Effect.repeat(Schedule.spaced("5 seconds")),
      Effect.forkScoped
    )

    return Inbox.of({
      store: Effect.fn("Inbox.store")(function*(update) {
        return yield* storeBatched({ update, span: yield* Effect.option(Effect.currentSpan) })
      }),

      claim: Effect.fn("Inbox.claim")(function*(limit, lease) {
        const rows = yield* db.withConnection(sql`
          WITH next AS (
            SELECT i.update_id FROM inbox i
            WHERE i.status IN ('pending', 'processing')
              AND CASE WHEN i.status = 'pending' THEN i.available_at <= now() ELSE i.locked_until < now() END
              -- Only the chat's oldest unfinished update may run (a min() over inbox_open_by_chat, a
              -- one-row index probe whatever the statistics say), and not while another update of the
              -- chat runs under a live lease (a dead letter requeued by an operator is older than
              -- updates that already ran, and must not run beside them).
              AND i.update_id = (
                SELECT min(e.update_id) FROM inbox e
                WHERE e.chat_key = i.chat_key AND e.status IN ('pending', 'processing'))
              AND NOT EXISTS (
                SELECT 1 FROM inbox r
                WHERE r.chat_key = i.chat_key AND r.update_id > i.update_id
                  AND r.status = 'processing' AND r.locked_until >= now())
            ORDER BY i.priority DESC, i.update_id
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          )
          UPDATE inbox SET
            status = 'processing',
            attempts = inbox.attempts + 1,
            lease_id = gen_random_uuid(),
            locked_until = now() + ${Duration.toMillis(lease)} * interval '1 millisecond'
          FROM next WHERE inbox.update_id = next.update_id
          RETURNING inbox.update_id, inbox.kind, inbox.payload, inbox.attempts, inbox.lease_id::text AS lease_id, inbox.traceparent`)
        const decoded = yield* decodeClaimed(rows).pipe(Effect.orDie)
        return decoded
          .map((row) => ({
            updateId: Number(row.update_id),
            kind: row.kind,
            payload: row.payload,
            attempts: row.attempts,
            leaseId: row.lease_id,
            traceparent: row.traceparent
          }))
          .sort((a, b) => a.updateId - b.updateId)
      }),

      // One statement, one round trip: finish the row (only under our lease), write its calls in
      // order, and wake the senders on commit.
      finish: (update, status, calls, traceId) =>
        Effect.map(
          sql<{ finished: number }>`
            WITH finished AS (
              UPDATE inbox SET status = ${status}, finished_at = now(), locked_until = NULL, lease_id = NULL,
                               last_error = NULL, trace_id = ${traceId}
              WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid
              RETURNING update_id
            ), queued AS (
              INSERT INTO outbox (chat_key, method, payload, update_id, traceparent)
              SELECT c.chat_key, c.method, c.payload::jsonb, f.update_id, nullif(c.traceparent, '')
              FROM finished f, unnest(
                ${calls.map((c) => c.chatKey)}::text[], ${calls.map((c) => c.method)}::text[],
                ${calls.map((c) => JSON.stringify(c.payload))}::text[], ${calls.map((c) => c.traceparent ?? "")}::text[]
              ) WITH ORDINALITY AS c(chat_key, method, payload, traceparent, position)
              ORDER BY c.position
              RETURNING 1
            ), notified AS (
              SELECT pg_notify(${NOTIFY_CHANNEL}, 'outbox') WHERE EXISTS (SELECT 1 FROM queued)
            )
            SELECT (SELECT count(*)::int FROM finished) AS finished, (SELECT count(*) FROM notified) AS notified`,
          (rows) => (rows[0]?.finished ?? 0) === 1
        ),

      fail: Effect.fn("Inbox.fail")(function*(update, error, maxAttempts, backoff, traceId) {
        const rows = yield* db.withConnection(sql<{ status: string }>`
          UPDATE inbox SET
            status = CASE WHEN attempts >= ${maxAttempts} THEN 'dead' ELSE 'pending' END,
            finished_at = CASE WHEN attempts >= ${maxAttempts} THEN now() END,
            available_at = now() + ${Duration.toMillis(backoff)} * interval '1 millisecond',
            last_error = ${error.slice(0, 4000)},
            trace_id = coalesce(${traceId}, trace_id),
            locked_until = NULL,
            lease_id = NULL
          WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid
          RETURNING status`, undefined, "handler")
        const status = rows[0]?.status
        return status === undefined ? undefined : status === "dead" ? "dead" : "retry"
      }),

      backlog: (wait) =>
        db.withConnection(
          sql.unsafe<{ pending: number; oldest: number | null; dead: number; outbox: number }>(BACKLOG_QUERY),
          wait,
          "health"
        ).pipe(Effect.map((rows) => ({
          pending: rows[0]?.pending ?? 0,
          oldestSeconds: rows[0]?.oldest ?? 0,
          dead: rows[0]?.dead ?? 0,
          outbox: rows[0]?.outbox ?? 0
        }))),

      release: (update) =>
        db.withConnection(sql`
          UPDATE inbox SET status = 'pending', attempts = greatest(attempts - 1, 0), locked_until = NULL, lease_id = NULL
          WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid`, undefined, "handler").pipe(Effect.asVoid),

    })
  }))
}
