import { Clock, Duration, Effect, Option, Schema, type Scope, type Tracer } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { type Database, type PoolTimeout } from "../db/Database.ts"
import { isDataError } from "../db/Jsonb.ts"
import { decodeRows } from "../db/Rows.ts"
import { makeBatcher, withBatchSpan } from "./Batcher.ts"
import type { Claimed } from "./Claimed.ts"
import type { HandOff } from "./HandOff.ts"
import type { Instance } from "./Instance.ts"
import { LEASE } from "./LeaseRenewal.ts"

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

/** Kinds Telegram needs answered within seconds jump the queue (they have their own chat key, so order is kept). */
export const URGENT_KINDS: ReadonlySet<string> = new Set(["pre_checkout_query", "shipping_query"])

/** Requests waiting for the inbox insert; beyond this the webhook answers 503 at once. */
export const INGRESS_CAPACITY = 2_000

export type StoreError = SqlError | PoolTimeout | IngressFull | StoreTimeout

export const isSqlDataError = (error: StoreError) => error._tag === "SqlError" && isDataError(error)

const StoredRow = Schema.Struct({ update_id: Schema.String, status: Schema.String, lease_id: Schema.NullOr(Schema.String) })
const decodeStored = decodeRows(StoredRow)

interface StoreRequest {
  readonly update: NewUpdate
  readonly span: Option.Option<Tracer.AnySpan>
}

/**
 * PROTOCOL: stored-before-200. Stores updates (`steadfast_store`, db/migrations/Functions.ts):
 * concurrent webhook requests share one call per batch, on one connection, instead of one
 * transaction per request competing for the pool. An update its chat lets run at once is stored
 * leased to us and goes to the hand-off (the hot path). True when the update was new; a `timed`
 * store fails with StoreTimeout once it has waited STORE_TIMEOUT.
 */
export const makeStore = (options: {
  readonly db: Database["Service"]
  readonly instance: Instance["Service"]
  readonly handOff: HandOff<Claimed>
}): Effect.Effect<
  (update: NewUpdate, storeOptions?: { readonly timed?: boolean }) => Effect.Effect<boolean, StoreError>,
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const { db, handOff, instance } = options
    const leaseMs = Duration.toMillis(LEASE)
    // (The driver cannot encode null array elements: an absent traceparent travels as "".)
    const insertBatch = (batch: ReadonlyArray<StoreRequest>) =>
      Effect.acquireUseRelease(
        Effect.sync(() => handOff.reserveUnsafe(batch.length)),
        (room) => {
          const me = instance.owner()
          // Each update_id's first request in the batch.
          const firstOf = new Map<string, StoreRequest>()
          for (const request of batch) {
            const id = String(request.update.updateId)
            if (!firstOf.has(id)) firstOf.set(id, request)
          }
          return db.withConnection(
            db.sql`
          SELECT update_id::text AS update_id, status, lease_id::text AS lease_id FROM steadfast_store(
            ${batch.map((r) => r.update.updateId)}::bigint[], ${batch.map((r) => r.update.chatKey)}::text[],
            ${batch.map((r) => r.update.kind)}::text[], ${batch.map((r) => r.update.json)}::text[],
            ${batch.map((r) => r.update.skipped)}::boolean[], ${batch.map((r) => (URGENT_KINDS.has(r.update.kind) ? 1 : 0))}::smallint[],
            ${batch.map((r) => r.update.traceparent ?? "")}::text[], ${room}, ${leaseMs}, ${me}::uuid)`,
            undefined,
            "ingress"
          ).pipe(
            decodeStored,
            Effect.tap((rows) =>
              Effect.flatMap(Clock.currentTimeMillis, (storedAt) =>
                Effect.forEach(rows, (row) => {
                  if (row.lease_id === null) return Effect.void
                  const update = firstOf.get(row.update_id)!.update
                  return handOff.put({
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
        (room) => Effect.sync(() => handOff.unreserveUnsafe(room))
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
    // Untraced: the webhook's span holds the batch's insert statement, which is what it waited for.
    return Effect.fnUntraced(function*(update: NewUpdate, storeOptions?: { readonly timed?: boolean }) {
      return yield* storeBatched({ update, span: yield* Effect.option(Effect.currentSpan) }, storeOptions?.timed)
    })
  })
