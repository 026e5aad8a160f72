import { Clock, Context, Duration, Effect, Layer, Option, Queue, Schedule, Schema, type Tracer } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { makeBatcher } from "./Batcher.ts"
import { isDataError, storableStringify } from "../db/Jsonb.ts"
import { type HeldLease, LEASE, type LeaseRenewal, makeLeaseRenewal, RENEW_BELOW } from "./LeaseRenewal.ts"
import type { ClaimedCall, OutgoingCall } from "./Outbox.ts"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { Instance } from "./Instance.ts"
import { NOTIFY_CHANNEL } from "../db/migrations/Functions.ts"
import { RecordedCall } from "../telegram/RecordedCall.ts"

export interface NewUpdate {
  readonly updateId: number
  readonly chatKey: string
  readonly kind: string
  /** The update as stored (jsonb-safe JSON text) and as parsed from it. */
  readonly json: string
  readonly payload: unknown
  readonly skipped: boolean
  readonly traceparent: string | null
}

interface StoreRequest {
  readonly update: NewUpdate
  readonly span: Option.Option<Tracer.AnySpan>
}

const ClaimedRow = Schema.Struct({
  update_id: Schema.Union([Schema.BigInt, Schema.Number, Schema.String]),
  chat_key: Schema.String,
  kind: Schema.String,
  payload: Schema.Unknown,
  attempts: Schema.Number,
  lease_id: Schema.String,
  traceparent: Schema.NullOr(Schema.String),
  calls: Schema.optional(Schema.NullOr(Schema.Array(RecordedCall))),
  received_ms: Schema.Number
})
type ClaimedRow = typeof ClaimedRow.Type

/** An update leased to this instance (as `owner`): `attempts` counts this run. */
export interface Claimed extends HeldLease {
  readonly owner: string
  readonly updateId: number
  readonly chatKey: string
  readonly kind: string
  readonly payload: unknown
  readonly attempts: number
  readonly traceparent: string | null
  /** The Bot API calls earlier attempts made, for this one to get back instead of making them again. */
  readonly recorded: ReadonlyArray<RecordedCall>
  /** When the update was stored (epoch ms). */
  readonly receivedAt: number
}

const toClaimed = (owner: string) => (row: ClaimedRow): Claimed => ({
  owner,
  id: String(row.update_id),
  updateId: Number(row.update_id),
  chatKey: row.chat_key,
  kind: row.kind,
  payload: row.payload,
  attempts: row.attempts,
  leaseId: row.lease_id,
  traceparent: row.traceparent,
  recorded: row.calls ?? [],
  receivedAt: row.received_ms
})

const FinishedRow = Schema.Struct({
  finished: Schema.Boolean,
  next: Schema.NullOr(Schema.Array(ClaimedRow)),
  calls: Schema.NullOr(Schema.Array(Schema.Struct({
    id: Schema.Union([Schema.Number, Schema.String]),
    chat_key: Schema.String,
    lease_id: Schema.String
  })))
})
const decodeFinished = Schema.decodeUnknownEffect(Schema.Array(FinishedRow))

/** How a handler's run ends: the update's status, the calls it queued, whether to lease its chat's next update. */
export interface FinishRequest {
  readonly update: Claimed
  readonly status: "done" | "skipped"
  readonly calls: ReadonlyArray<OutgoingCall>
  readonly traceId: string | null
  readonly chain: boolean
}

/** What a finish wrote: the chat's next update, leased to us, and the calls handed to our sender. */
export interface Finished {
  readonly next: Option.Option<Claimed>
  readonly calls: ReadonlyArray<ClaimedCall>
}

/** Too many updates are waiting to be stored: answer 503 at once rather than queue without bound. */
export class IngressFull extends Schema.TaggedError<IngressFull>()("IngressFull", {}) {
  override get message() {
    return "too many updates waiting to be stored"
  }
}

/** How long a timed store (the webhook's) waits for the inbox insert. */
export const STORE_TIMEOUT = Duration.seconds(3)

/** Not stored within STORE_TIMEOUT: the webhook answers 503 (the update may still be stored). */
export class StoreTimeout extends Schema.TaggedError<StoreTimeout>()("StoreTimeout", {}) {
  override get message() {
    return `the update was not stored within ${Duration.format(STORE_TIMEOUT)}`
  }
}

/** Requests waiting for the inbox insert; beyond this the webhook answers 503 at once. */
export const INGRESS_CAPACITY = 2_000
/** Updates leased at store time and waiting in memory for a worker. */
const HANDOFF_CAPACITY = 1_000

const isSqlDataError = (error: SqlError | PoolTimeout | IngressFull | StoreTimeout) => error._tag === "SqlError" && isDataError(error)

const decodeClaimed = Schema.decodeUnknownEffect(Schema.Array(ClaimedRow))

/** A statement for a batch of requests, traced under the first request's span and linked from the others'. */
const withBatchSpan = (name: string, batch: ReadonlyArray<{ readonly span: Option.Option<Tracer.AnySpan> }>) =>
<A, E, R>(
  statement: Effect.Effect<A, E, R>
) => {
  const spans = batch.flatMap((item) => Option.toArray(item.span))
  // The curried form: the data-first one captures a stack trace on every call.
  return statement.pipe(Effect.withSpan(name, {
    ...(spans[0] === undefined ? { root: true } : { parent: spans[0] }),
    links: spans.slice(1).map((span) => ({ span, attributes: {} })),
    attributes: { "steadfast.batch_size": batch.length }
  }))
}

export type FailureOutcome = "retry" | "dead" | "skipped"

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
    (SELECT count(*)::int FROM inbox WHERE status IN ('pending', 'processing') AND attempts >= 0) AS pending,
    (SELECT extract(epoch FROM now() - min(received_at))::float8 FROM inbox
     WHERE status IN ('pending', 'processing') AND attempts >= 0) AS oldest,
    (SELECT count(*)::int FROM inbox WHERE status = 'dead') AS dead,
    (SELECT count(*)::int FROM outbox WHERE status IN ('pending', 'sending') AND attempts >= 0) AS outbox`

/** Kinds Telegram needs answered within seconds jump the queue (they have their own chat key, so order is kept). */
export const URGENT_KINDS: ReadonlySet<string> = new Set(["pre_checkout_query", "shipping_query"])
const priorityOf = (kind: string) => (URGENT_KINDS.has(kind) ? 1 : 0)

/**
 * The durable inbox. An update is stored already leased to this instance when nothing else holds
 * its chat (every open update of it is under this instance's live lease), and handed to the
 * dispatcher from memory (`takeHandedOffUnsafe`); finishing an update may lease the chat's next one the
 * same way. Everything else (a chat's backlog, retries, a dead instance's expired
 * leases, restarts) is claimed: a chat's update is claimable only once every earlier update of that
 * chat is finished (done, skipped or dead), which gives strict per-chat order across any number of
 * instances sharing the table.
 *
 * Effect's `PersistedQueue` was considered: it claims the oldest visible element of a queue with
 * SKIP LOCKED, but has no notion of a key whose earlier element is still in flight, so it cannot
 * keep one chat's updates in order while other chats run concurrently.
 */
export class Inbox extends Context.Service<Inbox, {
  /**
   * Stores an update unless its update_id is already stored; true when it was new. A `timed` store
   * fails with StoreTimeout once it has waited STORE_TIMEOUT.
   */
  readonly store: (
    update: NewUpdate,
    options?: { readonly timed?: boolean }
  ) => Effect.Effect<boolean, SqlError | PoolTimeout | IngressFull | StoreTimeout>
  /**
   * Takes the next update leased to this instance when it was stored (urgent kinds first), if any.
   * Synchronous, so that the dispatcher decides where it goes in the same step.
   */
  readonly takeHandedOffUnsafe: () => Claimed | undefined
  /** Takes the updates of `chatKey` still waiting to be taken (synchronous, for the same reason). */
  readonly takeHandedOffOfChatUnsafe: (chatKey: string) => ReadonlyArray<Claimed>
  /** Waits until an update may have been handed over since the last poll. */
  readonly awaitHandedOff: Effect.Effect<void>
  /**
   * Claims up to `limit` runnable updates, at most one per chat. One whose lease ran out after
   * `maxAttempts` claims is dead-lettered instead.
   */
  readonly claim: (limit: number, maxAttempts: number) => Effect.Effect<ReadonlyArray<Claimed>, SqlError | PoolTimeout>
  /**
   * Inside the handler's transaction: marks the update finished and queues its Bot API calls, if
   * the lease is still ours (None: another instance took the update over, roll back). The calls to
   * the update's own chat are leased to our sender when no other owner holds that chat's calls, and
   * the chat's next waiting update is leased to us when `chain` is set.
   */
  readonly finish: (request: FinishRequest) => Effect.Effect<Option.Option<Finished>, SqlError>
  /**
   * The same for a handler that wrote nothing, in autocommit on a connection of its own: finishes
   * waiting at once share one statement.
   */
  readonly finishAlone: (request: FinishRequest) => Effect.Effect<Option.Option<Finished>, SqlError | PoolTimeout>
  /**
   * Records a failed run: back to pending after `backoff`, or dead once `maxAttempts` runs failed.
   * A run that failed for lack of infrastructure (`counted` false) is not counted and never kills.
   */
  readonly fail: (
    update: Claimed,
    error: string,
    options: {
      readonly maxAttempts: number
      readonly backoff: Duration.Duration
      readonly traceId: string | null
      readonly counted: boolean
      /** The calls a re-run must not make again (see RecordedCall). */
      readonly calls: ReadonlyArray<RecordedCall>
      /** No run can do better (the chat blocked the bot): finished as skipped, with the error. */
      readonly skip?: boolean
    }
  ) => Effect.Effect<FailureOutcome | undefined, SqlError | PoolTimeout>
  /** Work waiting: open updates, the oldest one's age, dead letters, open outbox calls. */
  readonly backlog: (wait: Duration.Input) => Effect.Effect<Backlog, SqlError | PoolTimeout>
  /** Returns an update to pending without counting the run (shutdown). */
  readonly release: (update: Claimed) => Effect.Effect<void, SqlError | PoolTimeout>
  /** Renews the leases of updates this instance holds. */
  readonly leases: LeaseRenewal
}>()("steadfast/queue/Inbox") {
  static readonly layer = Layer.effect(
    Inbox,
    Effect.gen(function*() {
      const db = yield* Database
      const sql = db.sql
      const instance = yield* Instance
      const leaseMs = Duration.toMillis(LEASE)

      const releaseUpdate = (update: Claimed) =>
        db.withConnection(
          sql`
        UPDATE inbox SET status = 'pending', attempts = greatest(attempts - 1, 0), locked_until = NULL, lease_id = NULL, owner = NULL
        WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid`,
          undefined,
          "handler"
        ).pipe(Effect.asVoid)

      // Also answers the leases no row holds any more: another instance took their update over.
      const leases = yield* makeLeaseRenewal((held) =>
        db.withConnection(
          sql<{ readonly lease_id: string }>`
        WITH h AS (
          SELECT * FROM unnest(${held.map((lease) => lease.id)}::bigint[], ${held.map((lease) => lease.leaseId)}::uuid[]) AS h(id, lease_id)
        ), renewed AS (
          UPDATE inbox SET locked_until = now() + ${leaseMs} * interval '1 millisecond'
          FROM h WHERE inbox.update_id = h.id AND inbox.lease_id = h.lease_id
            AND inbox.locked_until < now() + ${Duration.toMillis(RENEW_BELOW)} * interval '1 millisecond'
        )
        SELECT h.lease_id::text AS lease_id FROM h
        WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.update_id = h.id AND i.lease_id = h.lease_id)`,
          undefined,
          "lease"
        ).pipe(
          Effect.map((rows) => rows.map((row) => row.lease_id))
        )
      )

      // Leased at store time and waiting for the dispatcher: urgent kinds first (Telegram cancels a
      // payment whose pre-checkout query waits 10 s), then in order of arrival. `inMemory` holds them
      // until they finish (queued here or at the dispatcher). Room is reserved before the insert
      // decides how many rows it may lease, so what is leased to us always fits.
      const waitingUrgent: Array<Claimed> = []
      const waitingOther: Array<Claimed> = []
      const arrived = yield* Queue.sliding<void>(1)
      const inMemory = new Set<string>()
      let reserved = 0
      // Leased but never started (shutdown): back to pending, uncounted, for whoever runs next.
      yield* Effect.addFinalizer(() =>
        Effect.forEach(
          [...waitingUrgent.splice(0), ...waitingOther.splice(0)],
          (update) => releaseUpdate(update).pipe(Effect.ignoreCause),
          { discard: true }
        )
      )
      const handOff = (update: Claimed) =>
        Effect.andThen(
          leases.hold(update),
          Effect.suspend(() => {
            inMemory.add(update.leaseId)
            ;(URGENT_KINDS.has(update.kind) ? waitingUrgent : waitingOther).push(update)
            return Queue.offer(arrived, undefined)
          })
        )

      // (The driver cannot encode null array elements: an absent traceparent travels as "".)
      // Concurrent webhook requests are stored together: one call per batch, on one connection,
      // instead of one transaction per request competing for the pool.
      const insertBatch = (batch: ReadonlyArray<StoreRequest>) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            const slots = Math.max(0, Math.min(batch.length, HANDOFF_CAPACITY - inMemory.size - reserved))
            reserved += slots
            return slots
          }),
          (slots) => {
            const me = instance.owner()
            // Each update_id's first request in the batch.
            const firstOf = new Map<string, StoreRequest>()
            for (const request of batch) {
              const id = String(request.update.updateId)
              if (!firstOf.has(id)) firstOf.set(id, request)
            }
            return db.withConnection(
              sql<{ update_id: string; status: string; lease_id: string | null }>`
            SELECT update_id::text AS update_id, status, lease_id::text AS lease_id FROM steadfast_store(
              ${batch.map((r) => r.update.updateId)}::bigint[], ${batch.map((r) => r.update.chatKey)}::text[],
              ${batch.map((r) => r.update.kind)}::text[], ${batch.map((r) => r.update.json)}::text[],
              ${batch.map((r) => r.update.skipped)}::boolean[], ${batch.map((r) => priorityOf(r.update.kind))}::smallint[],
              ${batch.map((r) => r.update.traceparent ?? "")}::text[], ${slots}, ${leaseMs}, ${me}::uuid)`,
              undefined,
              "ingress"
            ).pipe(
              Effect.tap((rows) =>
                Effect.flatMap(Clock.currentTimeMillis, (storedAt) =>
                  Effect.forEach(rows, (row) => {
                    if (row.lease_id === null) return Effect.void
                    const update = firstOf.get(row.update_id)!.update
                    return handOff({
                      owner: me,
                      id: row.update_id,
                      updateId: update.updateId,
                      chatKey: update.chatKey,
                      kind: update.kind,
                      payload: update.payload,
                      attempts: 1,
                      leaseId: row.lease_id,
                      traceparent: update.traceparent,
                      recorded: [],
                      receivedAt: storedAt
                    })
                  }, { discard: true }))
              ),
              Effect.map((rows) => {
                const inserted = new Set(rows.map((row) => row.update_id))
                // Of two requests for one update_id in a batch, only the first counts as new.
                return batch.map((request) => {
                  const id = String(request.update.updateId)
                  return inserted.has(id) && firstOf.get(id) === request
                })
              })
            )
          },
          (slots) => Effect.sync(() => void (reserved -= slots))
        ).pipe(withBatchSpan("Inbox.insert", batch))
      const storeBatched = yield* makeBatcher({
        run: insertBatch,
        max: 200,
        writers: 2,
        isItemError: isSqlDataError,
        capacity: INGRESS_CAPACITY,
        full: new IngressFull(),
        timeout: { after: STORE_TIMEOUT, error: new StoreTimeout() }
      })

      // The queue's statements need current statistics: without them PostgreSQL plans a scan of
      // every open row, and autovacuum wakes only once a minute, far too late for a burst. A table
      // that has doubled since its last ANALYZE is analyzed within a second (its cached plans were
      // made for a table half its size); otherwise churn is caught up every five. Cheap when idle.
      yield* db.withConnection(
        Effect.gen(function*() {
          const stale = yield* sql<{ relname: string }>`
        SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.relname IN ('inbox', 'outbox') AND s.n_mod_since_analyze > greatest(500, s.n_live_tup / 5)
          AND (s.n_live_tup > 2 * c.reltuples
               OR coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity') < now() - interval '5 seconds')`
          for (const { relname } of stale) yield* sql.unsafe(`ANALYZE ${relname === "inbox" ? "inbox" : "outbox"}`)
        }),
        "1 second"
      ).pipe(
        Effect.catchCause((cause) => Effect.logDebug("refreshing queue statistics failed", cause)),
        Effect.repeat(Schedule.spaced("1 second")),
        Effect.forkScoped
      )

      // One statement, one round trip, for any number of updates (of distinct chats): finish each
      // row (only under our lease), lease its chat's next waiting update to us, write its calls in
      // order (those to the update's own chat leased to our sender when every open call of that chat
      // is ours already: they queue behind them in its memory), and wake the senders on commit for
      // the others. Calls to other chats always take the claim path, so two updates of different
      // chats never hand off calls of one chat at once. "Is the chat busy" and "which is its next
      // update" are LATERAL probes with LIMIT 1: one index probe per row, where a join or an EXISTS
      // may be planned as a hashed scan of every open row (thousands in a burst, with stale stats).
      const finishStatement = (requests: ReadonlyArray<FinishRequest>) => {
        const me = instance.owner()
        const calls = requests.flatMap((request, index) => request.calls.map((call) => ({ item: index + 1, call })))
        return sql`
          WITH input AS (
            SELECT * FROM unnest(
              ${requests.map((r) => r.update.updateId)}::bigint[], ${requests.map((r) => r.update.leaseId)}::uuid[],
              ${requests.map((r) => r.status)}::text[], ${requests.map((r) => r.traceId ?? "")}::text[],
              ${requests.map((r) => r.chain)}::boolean[]
            ) WITH ORDINALITY AS t(update_id, lease_id, status, trace_id, chain, item)
          ), finished AS (
            UPDATE inbox SET status = i.status, finished_at = now(), locked_until = NULL, lease_id = NULL,
                             owner = NULL, last_error = NULL, trace_id = nullif(i.trace_id, ''), calls = NULL
            FROM input i WHERE inbox.update_id = i.update_id AND inbox.lease_id = i.lease_id
            RETURNING inbox.update_id, inbox.chat_key, i.item, i.chain
          ), successor AS (
            SELECT n.update_id, f.item
            FROM finished f CROSS JOIN LATERAL (
              SELECT e.update_id FROM inbox e
              WHERE e.chat_key = f.chat_key AND e.status IN ('pending', 'processing') AND e.update_id <> f.update_id
              ORDER BY e.update_id LIMIT 1) AS oldest
            JOIN inbox n ON n.update_id = oldest.update_id
            WHERE f.chain AND n.status = 'pending' AND n.available_at <= now()
            FOR UPDATE OF n SKIP LOCKED
          ), chained AS (
            UPDATE inbox SET status = 'processing', attempts = inbox.attempts + 1, lease_id = gen_random_uuid(),
                             locked_until = now() + ${leaseMs} * interval '1 millisecond', owner = ${me}::uuid
            FROM successor s WHERE inbox.update_id = s.update_id
            RETURNING s.item, inbox.update_id, inbox.chat_key, inbox.kind, inbox.payload, inbox.attempts,
                      inbox.lease_id::text AS lease_id, inbox.traceparent, inbox.calls,
                      extract(epoch FROM inbox.received_at)::float8 * 1000 AS received_ms
          ), calls AS (
            SELECT c.*, f.update_id, c.chat_key = f.chat_key AS own, held.chat_key IS NULL AS free
            FROM unnest(
              ${calls.map((c) => c.item)}::int[], ${calls.map((c) => c.call.chatKey)}::text[],
              ${calls.map((c) => c.call.method)}::text[], ${calls.map((c) => JSON.stringify(c.call.payload))}::text[],
              ${calls.map((c) => c.call.traceparent ?? "")}::text[]
            ) WITH ORDINALITY AS c(item, chat_key, method, payload, traceparent, position)
            JOIN finished f ON f.item = c.item
            LEFT JOIN LATERAL (
              SELECT o.chat_key FROM outbox o
              WHERE o.chat_key = c.chat_key AND o.status IN ('pending', 'sending')
                AND (o.status = 'pending' OR o.owner IS DISTINCT FROM ${me}::uuid OR o.locked_until <= now())
              LIMIT 1) AS held ON true
          ), queued AS (
            INSERT INTO outbox (chat_key, method, payload, update_id, traceparent, status, attempts, lease_id, locked_until, owner)
            SELECT c.chat_key, c.method, c.payload::jsonb, c.update_id, nullif(c.traceparent, ''),
                   CASE WHEN c.free AND c.own THEN 'sending' ELSE 'pending' END, CASE WHEN c.free AND c.own THEN 1 ELSE 0 END,
                   CASE WHEN c.free AND c.own THEN gen_random_uuid() END,
                   CASE WHEN c.free AND c.own THEN now() + ${leaseMs} * interval '1 millisecond' END,
                   CASE WHEN c.free AND c.own THEN ${me}::uuid END
            FROM calls c
            ORDER BY c.position
            RETURNING id, chat_key, update_id, lease_id
          ), notified AS (
            -- Only for a call that could go now but is not ours to send; one behind a call in flight
            -- is leased when that call is marked sent.
            SELECT pg_notify(${NOTIFY_CHANNEL}, 'outbox') WHERE EXISTS (SELECT 1 FROM calls WHERE free AND NOT own)
          )
          SELECT i.item::int AS item, f.update_id IS NOT NULL AS finished,
                 (SELECT json_agg(c) FROM chained c WHERE c.item = i.item) AS next,
                 (SELECT json_agg(json_build_object('id', q.id::text, 'chat_key', q.chat_key, 'lease_id', q.lease_id) ORDER BY q.id)
                  FROM queued q WHERE q.update_id = i.update_id AND q.lease_id IS NOT NULL) AS calls,
                 (SELECT count(*) FROM notified) AS notified
          FROM input i LEFT JOIN finished f ON f.item = i.item
          ORDER BY i.item`.pipe(
          Effect.flatMap((rows) => Effect.orDie(decodeFinished(rows))),
          Effect.flatMap((rows) =>
            Effect.forEach(requests, (request, index) => {
              const row = rows[index]
              if (row === undefined || !row.finished) return Effect.succeed(Option.none<Finished>())
              const next = Option.map(Option.fromNullishOr(row.next?.[0]), toClaimed(me))
              // Leased calls come back in id order, which is the order of the calls to their chat.
              const leasedChats = new Set((row.calls ?? []).map((call) => call.chat_key))
              const leasedCalls = request.calls.filter((call) => leasedChats.has(call.chatKey))
              const handed = (row.calls ?? []).map((leased, at): ClaimedCall => ({
                owner: me,
                id: String(leased.id),
                chatKey: leased.chat_key,
                method: leasedCalls[at]!.method,
                payload: leasedCalls[at]!.payload,
                attempts: 1,
                leaseId: leased.lease_id,
                traceparent: leasedCalls[at]!.traceparent
              }))
              return Effect.as(Option.isSome(next) ? leases.hold(next.value) : Effect.void, Option.some({ next, calls: handed }))
            })
          )
        )
      }
      // Finishes of handlers that wrote nothing need no transaction of their own: those waiting at
      // once share one statement (each row still fenced by its own lease), traced under the first
      // one's span and linked from the others'. One statement at a time: what finishes meanwhile
      // waits for the next, so a busy instance writes fewer, larger batches (measured: about a
      // third less PostgreSQL CPU per update than with two in flight).
      const finishBatched = yield* makeBatcher({
        run: (batch: ReadonlyArray<{ readonly request: FinishRequest; readonly span: Option.Option<Tracer.AnySpan> }>) =>
          db.withConnection(finishStatement(batch.map((item) => item.request)), undefined, "handler").pipe(
            withBatchSpan("Inbox.finish", batch)
          ),
        max: 100,
        writers: 1,
        isItemError: isSqlDataError
      })

      return Inbox.of({
        // Untraced: the webhook's span holds the batch's insert statement, which is what it waited for.
        store: Effect.fnUntraced(function*(update, options) {
          return yield* storeBatched({ update, span: yield* Effect.option(Effect.currentSpan) }, options?.timed)
        }),

        takeHandedOffUnsafe: () => waitingUrgent.shift() ?? waitingOther.shift(),
        takeHandedOffOfChatUnsafe: (chatKey) => {
          const taken: Array<Claimed> = []
          for (const waiting of [waitingUrgent, waitingOther]) {
            for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i]!.chatKey === chatKey) taken.unshift(...waiting.splice(i, 1))
          }
          return taken
        },
        awaitHandedOff: Effect.asVoid(Queue.take(arrived)),

        claim: Effect.fn("Inbox.claim")(function*(limit, maxAttempts) {
          const me = instance.owner()
          const rows = yield* db.withConnection(sql<{ readonly update_id: unknown; readonly dead: boolean }>`
          WITH next AS (
            -- An update whose lease ran out after maxAttempts claims never recorded an outcome: each
            -- run took its instance down (or never got to say why). It is dead now, not claimed again.
            SELECT i.update_id, i.status = 'processing' AND i.attempts >= ${maxAttempts} AS dead FROM inbox i
            -- attempts >= 0 (always true) names inbox_open, the claims' own index (migration 0013).
            WHERE i.status IN ('pending', 'processing') AND i.attempts >= 0
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
            status = CASE WHEN d.dead THEN 'dead' ELSE 'processing' END,
            attempts = inbox.attempts + CASE WHEN d.dead THEN 0 ELSE 1 END,
            lease_id = CASE WHEN d.dead THEN NULL ELSE gen_random_uuid() END,
            locked_until = CASE WHEN d.dead THEN NULL ELSE now() + ${leaseMs} * interval '1 millisecond' END,
            owner = CASE WHEN d.dead THEN NULL ELSE ${me}::uuid END,
            finished_at = CASE WHEN d.dead THEN now() END,
            last_error = CASE WHEN d.dead
              THEN 'claimed ' || inbox.attempts || ' times without an outcome (did its runs crash the process?)'
              ELSE inbox.last_error END
          FROM next d WHERE inbox.update_id = d.update_id
          RETURNING inbox.update_id, inbox.chat_key, inbox.kind, inbox.payload, inbox.attempts, inbox.lease_id::text AS lease_id,
                    inbox.traceparent, inbox.calls, extract(epoch FROM inbox.received_at)::float8 * 1000 AS received_ms, d.dead`)
          const dead = rows.filter((row) => row.dead === true)
          if (dead.length > 0) {
            yield* Effect.logError(
              `dead-lettered at claim, having run ${maxAttempts} times without an outcome: update(s) ${
                dead.map((row) => String(row.update_id)).join(", ")
              }`
            )
          }
          const decoded = yield* decodeClaimed(rows.filter((row) => row.dead !== true)).pipe(Effect.orDie)
          const claimed = decoded.map(toClaimed(me)).sort((a, b) => a.updateId - b.updateId)
          yield* Effect.forEach(claimed, (lease) => leases.hold(lease), { discard: true })
          return claimed
        }),

        finish: (request) => Effect.suspend(() => Effect.map(finishStatement([request]), (results) => results[0]!)),
        finishAlone: (request) => Effect.flatMap(Effect.option(Effect.currentSpan), (span) => finishBatched({ request, span })),

        fail: Effect.fn("Inbox.fail")(function*(update, error, { backoff, calls, counted, maxAttempts, skip = false, traceId }) {
          const rows = yield* db.withConnection(
            sql<{ status: string }>`
          UPDATE inbox SET
            status = CASE WHEN ${skip} THEN 'skipped' WHEN ${counted} AND attempts >= ${maxAttempts} THEN 'dead' ELSE 'pending' END,
            finished_at = CASE WHEN ${skip} OR (${counted} AND attempts >= ${maxAttempts}) THEN now() END,
            attempts = CASE WHEN ${counted} THEN attempts ELSE greatest(attempts - 1, 0) END,
            available_at = now() + ${Duration.toMillis(backoff)} * interval '1 millisecond',
            last_error = ${error.slice(0, 4000)},
            trace_id = coalesce(${traceId}, trace_id),
            calls = ${calls.length === 0 ? null : storableStringify(calls)}::jsonb,
            locked_until = NULL,
            lease_id = NULL,
            owner = NULL
          WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid
          RETURNING status`,
            undefined,
            "handler"
          )
          const status = rows[0]?.status
          return status === undefined ? undefined : status === "dead" || status === "skipped" ? status : "retry"
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

        release: releaseUpdate,
        leases: {
          hold: leases.hold,
          release: (lease) => Effect.andThen(leases.release(lease), Effect.sync(() => void inMemory.delete(lease.leaseId)))
        }
      })
    })
  )
}
