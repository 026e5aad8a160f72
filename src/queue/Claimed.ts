import { Schema } from "effect"
import { RecordedCall } from "../telegram/RecordedCall.ts"
import type { HeldLease } from "./LeaseRenewal.ts"

/** Work leased to this instance, as the queue holds it: an update, or a call to make after commit. */

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

/** A leased inbox row as the claim and the finish return it. */
export const ClaimedRow = Schema.Struct({
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

/** The columns a statement returns for `ClaimedRow`. */
export const CLAIMED_COLUMNS = `inbox.update_id, inbox.chat_key, inbox.kind, inbox.payload, inbox.attempts,
  inbox.lease_id::text AS lease_id, inbox.traceparent, inbox.calls,
  extract(epoch FROM inbox.received_at)::float8 * 1000 AS received_ms`

export const toClaimed = (owner: string) => (row: typeof ClaimedRow.Type): Claimed => ({
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

/** A call to make after commit, leased to this instance (as `owner`) for delivery. */
export interface ClaimedCall {
  /** The owner id it was leased under (see Instance). */
  readonly owner: string
  readonly id: string
  readonly chatKey: string
  readonly method: string
  readonly payload: Record<string, unknown>
  readonly attempts: number
  readonly leaseId: string
  readonly traceparent: string | null
}

/** A leased outbox row as the claim and the "sent" mark return it. */
export const ClaimedCallRow = Schema.Struct({
  id: Schema.Union([Schema.BigInt, Schema.Number, Schema.String]),
  chat_key: Schema.String,
  method: Schema.String,
  payload: Schema.Record(Schema.String, Schema.Unknown),
  attempts: Schema.Number,
  lease_id: Schema.String,
  traceparent: Schema.NullOr(Schema.String)
})

export const toClaimedCall = (owner: string) => (row: typeof ClaimedCallRow.Type): ClaimedCall => ({
  owner,
  id: String(row.id),
  chatKey: row.chat_key,
  method: row.method,
  payload: row.payload,
  attempts: row.attempts,
  leaseId: row.lease_id,
  traceparent: row.traceparent
})
