import { Context, Deferred, Duration, Effect, Exit, Layer, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { makeBatcher } from "./Batcher.ts"
import { type HandedOff, makeHandOff } from "./HandOff.ts"
import { Database, type PoolTimeout } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"
import { type ClaimedCall, ClaimedCallRow, toClaimedCall } from "./Claimed.ts"
import { Instance } from "./Instance.ts"
import { LEASE, type LeaseRenewal, makeLeaseRenewal, RENEW_BELOW } from "./LeaseRenewal.ts"

const decodeClaimed = decodeRows(ClaimedCallRow)
const decodeStatus = decodeRows(Schema.Struct({ status: Schema.Literals(["pending", "failed", "expired"]) }))

/** When a transiently failed call is tried again, and whether that failure counts as an attempt. */
export interface RetryLater {
  readonly delay: Duration.Duration
  /** False for a 429: Telegram asked us to slow down, the call itself did nothing wrong. */
  readonly counted: boolean
  /** Older than this, the call is given up (expired) instead. */
  readonly maxAge: Duration.Duration
}

/**
 * Bot API calls waiting to be made. Handlers add rows inside their transaction, so a reply
 * exists exactly when the update's processing committed; the Sender delivers them in id
 * order per chat, with the same lease scheme as the inbox. Calls written already leased to this
 * instance reach the sender from memory after the commit (`handOff`); the claim is for the rest.
 */
export class Outbox extends Context.Service<Outbox, {
  /**
   * After the commit that wrote them leased to us: the calls of one update, to deliver in order.
   * Answers an effect that waits until each of them has been sent (or has failed, or gone back to
   * the table), so the chat's next update runs after them.
   */
  readonly handOff: (calls: ReadonlyArray<ClaimedCall>) => Effect.Effect<Effect.Effect<void>>
  /** The calls handed over, for the sender. */
  readonly handedOff: HandedOff<ClaimedCall>
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<ClaimedCall>, SqlError | PoolTimeout>
  /** Marks a call sent; the chat's next call when this leased it to us. */
  readonly markSent: (call: ClaimedCall) => Effect.Effect<Option.Option<ClaimedCall>, SqlError | PoolTimeout>
  /**
   * Records a failed delivery: failed for good when `retry` is undefined; else retried after
   * `retry.delay` (an attempt that is not `counted` is given back) unless the call is older than
   * `retry.maxAge`, then expired. The row's new status; none when the lease was lost.
   */
  readonly fail: (
    call: ClaimedCall,
    error: string,
    retry: RetryLater | undefined
  ) => Effect.Effect<Option.Option<"pending" | "failed" | "expired">, SqlError | PoolTimeout>
  readonly release: (call: ClaimedCall) => Effect.Effect<void, SqlError | PoolTimeout>
  readonly leases: LeaseRenewal
}>()("steadfast/queue/Outbox") {
  static readonly layer = Layer.effect(
    Outbox,
    Effect.gen(function*() {
      const db = yield* Database
      const sql = db.sql
      const instance = yield* Instance
      const leaseMs = Duration.toMillis(LEASE)
      const releaseCall = (call: ClaimedCall) =>
        db.withConnection(sql`
        UPDATE outbox SET status = 'pending', attempts = greatest(attempts - 1, 0), locked_until = NULL, lease_id = NULL, owner = NULL
        WHERE id = ${call.id}::bigint AND lease_id = ${call.leaseId}::uuid`).pipe(Effect.asVoid)
      const leases = yield* makeLeaseRenewal((held) =>
        db.withConnection(
          sql`
        UPDATE outbox SET locked_until = now() + ${leaseMs} * interval '1 millisecond'
        FROM unnest(${held.map((lease) => lease.id)}::bigint[], ${held.map((lease) => lease.leaseId)}::uuid[]) AS h(id, lease_id)
        WHERE outbox.id = h.id AND outbox.lease_id = h.lease_id
          AND outbox.locked_until < now() + ${Duration.toMillis(RENEW_BELOW)} * interval '1 millisecond'`,
          undefined,
          "lease"
        ).pipe(Effect.as([]))
      )
      // Handed-off calls still in the sender's memory, by lease id: their chat's next update waits for them.
      const settling = new Map<string, Deferred.Deferred<void>>()
      // Handed over but never started (shutdown): back to pending, uncounted, for whoever sends next.
      // Unbounded, but only ever fed by the dispatcher's workers, which are bounded.
      const handOff = yield* makeHandOff<ClaimedCall>({
        capacity: Number.POSITIVE_INFINITY,
        isUrgent: () => false,
        hold: (call) => leases.hold(call),
        giveBack: (call) => releaseCall(call).pipe(Effect.ignoreCause)
      })
      // Deliveries finish concurrently; their "sent" marks share one statement per batch, which also
      // leases to us each chat's next call if it is waiting (the call marked sent was in its way).
      // One batch at a time, as for the inbox's finishes: fewer, larger statements. Two `= ANY`
      // match each row to its own lease (a lease id is a fresh random uuid, no other row's) without
      // a join, so PostgreSQL keeps one cached plan: with a join to unnest it planned every call
      // afresh, and planning cost more than the execution.
      const markSentBatched = yield* makeBatcher({
        run: (calls: ReadonlyArray<ClaimedCall>) => {
          const me = instance.owner()
          return db.withConnection(sql`
          WITH sent AS (
            UPDATE outbox SET status = 'sent', sent_at = now(), locked_until = NULL, lease_id = NULL, owner = NULL, last_error = NULL
            WHERE outbox.id = ANY(${calls.map((call) => call.id)}::bigint[])
              AND outbox.lease_id = ANY(${calls.map((call) => call.leaseId)}::uuid[])
            RETURNING outbox.id, outbox.chat_key
          ), successor AS (
            SELECT n.id
            FROM sent s CROSS JOIN LATERAL (
              SELECT e.id FROM outbox e
              WHERE e.chat_key = s.chat_key AND e.status IN ('pending', 'sending') AND e.id <> s.id
              ORDER BY e.id LIMIT 1) AS oldest
            JOIN outbox n ON n.id = oldest.id
            WHERE n.status = 'pending' AND n.available_at <= now()
            FOR UPDATE OF n SKIP LOCKED
          )
          UPDATE outbox SET status = 'sending', attempts = outbox.attempts + 1, lease_id = gen_random_uuid(),
                            locked_until = now() + ${leaseMs} * interval '1 millisecond', owner = ${me}::uuid
          FROM successor WHERE outbox.id = successor.id
          RETURNING outbox.id::text AS id, outbox.chat_key, outbox.method, outbox.payload, outbox.attempts,
                    outbox.lease_id::text AS lease_id, outbox.traceparent`).pipe(
            decodeClaimed,
            Effect.flatMap((rows) => Effect.forEach(rows.map(toClaimedCall(me)), (next) => Effect.as(leases.hold(next), next))),
            Effect.map((next) => calls.map((call) => Option.fromNullishOr(next.find((candidate) => candidate.chatKey === call.chatKey))))
          )
        },
        max: 200,
        writers: 1
      })
      return Outbox.of({
        // PROTOCOL: after-commit-order.
        handOff: (calls) => {
          if (calls.length === 0) return Effect.succeed(Effect.void)
          const settled = calls.map((call) => {
            const deferred = Deferred.makeUnsafe<void>()
            settling.set(call.leaseId, deferred)
            return deferred
          })
          return Effect.forEach(calls, handOff.put, { discard: true }).pipe(
            Effect.as(Effect.forEach(settled, Deferred.await, { discard: true }))
          )
        },
        handedOff: handOff,
        claim: Effect.fn("Outbox.claim")(function*(limit) {
          const me = instance.owner()
          const rows = yield* db.withConnection(sql`
          WITH next AS (
            SELECT o.id FROM outbox o
            -- attempts >= 0 (always true) names outbox_open, the claims' own index (migration 0013).
            WHERE o.status IN ('pending', 'sending') AND o.attempts >= 0
              AND CASE WHEN o.status = 'pending' THEN o.available_at <= now() ELSE o.locked_until < now() END
              AND NOT EXISTS (
                SELECT 1 FROM outbox e
                WHERE e.chat_key = o.chat_key AND e.id < o.id AND e.status IN ('pending', 'sending'))
            ORDER BY o.id
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          )
          UPDATE outbox SET
            status = 'sending',
            attempts = outbox.attempts + 1,
            lease_id = gen_random_uuid(),
            locked_until = now() + ${leaseMs} * interval '1 millisecond',
            owner = ${me}::uuid
          FROM next WHERE outbox.id = next.id
          RETURNING outbox.id::text AS id, outbox.chat_key, outbox.method, outbox.payload, outbox.attempts, outbox.lease_id::text AS lease_id, outbox.traceparent`)
            .pipe(decodeClaimed)
          const claimed = rows.map(toClaimedCall(me))
          yield* Effect.forEach(claimed, (lease) => leases.hold(lease), { discard: true })
          return claimed
        }),

        markSent: markSentBatched,

        fail: (call, error, retry) => {
          const expired = retry === undefined
            ? sql`false`
            : sql`created_at < now() - ${Duration.toMillis(retry.maxAge)} * interval '1 millisecond'`
          return db.withConnection(sql`
          UPDATE outbox SET
            status = CASE WHEN ${retry === undefined} THEN 'failed' WHEN ${expired} THEN 'expired' ELSE 'pending' END,
            attempts = CASE WHEN ${retry?.counted ?? true} THEN attempts ELSE greatest(attempts - 1, 0) END,
            available_at = now() + ${retry === undefined ? 0 : Duration.toMillis(retry.delay)} * interval '1 millisecond',
            last_error = ${error.slice(0, 4000)},
            locked_until = NULL,
            lease_id = NULL,
            owner = NULL
          WHERE id = ${call.id}::bigint AND lease_id = ${call.leaseId}::uuid
          RETURNING status`).pipe(decodeStatus, Effect.map((rows) => Option.map(Option.fromNullishOr(rows[0]), (row) => row.status)))
        },

        release: releaseCall,

        leases: {
          hold: leases.hold,
          // Every way a call leaves the sender's memory (sent, failed, back to the table) ends its lease here.
          release: (call) =>
            Effect.andThen(
              leases.release(call),
              Effect.suspend(() => {
                handOff.freeUnsafe(call.leaseId)
                const deferred = settling.get(call.leaseId)
                settling.delete(call.leaseId)
                return deferred === undefined ? Effect.void : Deferred.done(deferred, Exit.void)
              })
            )
        }
      })
    })
  )
}
