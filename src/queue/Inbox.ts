import { Context, Duration, Effect, Layer, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { storableStringify } from "../db/Jsonb.ts"
import { decodeRows } from "../db/Rows.ts"
import { RecordedCall } from "../telegram/RecordedCall.ts"
import { type Claimed, CLAIMED_COLUMNS, ClaimedRow, toClaimed } from "./Claimed.ts"
import { type FinishRequest, type Finished, makeFinish } from "./Finish.ts"
import { type HandedOff, makeHandOff } from "./HandOff.ts"
import { Instance } from "./Instance.ts"
import { LEASE, type LeaseRenewal, makeLeaseRenewal, RENEW_BELOW } from "./LeaseRenewal.ts"
import { keepPlannerStatisticsFresh } from "./PlannerStatistics.ts"
import { makeStore, type NewUpdate, type StoreError, URGENT_KINDS } from "./Store.ts"

/** Updates leased at store time and waiting in memory for a worker. */
const HANDOFF_CAPACITY = 1_000

export type FailureOutcome = "retry" | "dead" | "skipped"

const decodeClaimedOrDead = decodeRows(Schema.Struct({ ...ClaimedRow.fields, dead: Schema.Boolean }))
const decodeStatus = decodeRows(Schema.Struct({ status: Schema.Literals(["pending", "dead", "skipped"]) }))
const decodeLost = decodeRows(Schema.Struct({ lease_id: Schema.String }))

/**
 * The durable inbox (src/queue/PROTOCOL.md): updates are stored (Store.ts), leased to this
 * instance at store time or by their chat's previous finish (the hot path, `handedOff`) or claimed
 * from the table (the recovery path, `claim`), and finished (Finish.ts) or failed under their lease.
 */
export class Inbox extends Context.Service<Inbox, {
  /**
   * Stores an update unless its update_id is already stored; true when it was new. A `timed` store
   * fails with StoreTimeout once it has waited STORE_TIMEOUT.
   */
  readonly store: (
    update: NewUpdate,
    options?: { readonly timed?: boolean }
  ) => Effect.Effect<boolean, StoreError>
  /** Updates leased to us when stored or by their chat's previous finish, for the dispatcher. */
  readonly handedOff: HandedOff<Claimed>
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

      const release = (update: Claimed) =>
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
          sql`
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
        ).pipe(decodeLost, Effect.map((rows) => rows.map((row) => row.lease_id)))
      )
      // Leased but never started (shutdown): back to pending, uncounted, for whoever runs next.
      const handOff = yield* makeHandOff<Claimed>({
        capacity: HANDOFF_CAPACITY,
        isUrgent: (update) => URGENT_KINDS.has(update.kind),
        hold: (update) => leases.hold(update),
        giveBack: (update) => release(update).pipe(Effect.ignoreCause)
      })
      const store = yield* makeStore({ db, instance, handOff })
      const { finish, finishAlone } = yield* makeFinish({ db, instance, hold: (update) => leases.hold(update) })
      yield* keepPlannerStatisticsFresh(db)

      return Inbox.of({
        store,
        handedOff: handOff,

        claim: Effect.fn("Inbox.claim")(function*(limit, maxAttempts) {
          const me = instance.owner()
          // PROTOCOL: one-runner, chat-order, bounded-attempts.
          const rows = yield* db.withConnection(sql`
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
          RETURNING ${sql.literal(CLAIMED_COLUMNS)}, d.dead`).pipe(decodeClaimedOrDead)
          const dead = rows.filter((row) => row.dead)
          if (dead.length > 0) {
            yield* Effect.logError(
              `dead-lettered at claim, having run ${maxAttempts} times without an outcome: update(s) ${
                dead.map((row) => String(row.update_id)).join(", ")
              }`
            )
          }
          const claimed = rows.filter((row) => !row.dead).map(toClaimed(me)).sort((a, b) => a.updateId - b.updateId)
          yield* Effect.forEach(claimed, (lease) => leases.hold(lease), { discard: true })
          return claimed
        }),

        finish,
        finishAlone,

        // PROTOCOL: fencing, recorded-calls, bounded-attempts.
        fail: Effect.fn("Inbox.fail")(function*(update, error, { backoff, calls, counted, maxAttempts, skip = false, traceId }) {
          const rows = yield* db.withConnection(
            sql`
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
          ).pipe(decodeStatus)
          const status = rows[0]?.status
          return status === undefined ? undefined : status === "pending" ? "retry" : status
        }),
        release,
        leases: {
          hold: leases.hold,
          release: (lease) => Effect.andThen(leases.release(lease), Effect.sync(() => handOff.freeUnsafe(lease.leaseId)))
        }
      })
    })
  )
}
