import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { decodeRows } from "../Rows.ts"

/** The channel every instance LISTENs on; payload `inbox` or `outbox` says what has new work. */
export const NOTIFY_CHANNEL = "steadfast"

// Stores a batch of updates (src/queue/PROTOCOL.md, "The hot path"). An update is leased to `me`
// at once (up to `leasable` of them, a chat's in update_id order) when every open update of its
// chat is under a live lease of `me`: they then run one after the other in `me`'s memory (an
// expired one may be anybody's next). PROTOCOL: chat-order — the advisory lock per chat makes that
// check see every update of the chat committed before it: a plain statement's snapshot could miss
// one committed by another instance a moment earlier, and both would run an update of one chat.
// Being plpgsql, the INSERT takes its snapshot after the locks are held. "Is the chat held" is a
// LATERAL probe with LIMIT 1, computed once per row (MATERIALIZED): a NOT EXISTS may be planned as
// one hashed scan of every open update, thousands in a burst (migration 0013).
const STORE_HEADER = `
  CREATE OR REPLACE FUNCTION steadfast_store(
    ids bigint[], chat_keys text[], kinds text[], payloads text[], skipped boolean[],
    priorities smallint[], traceparents text[], leasable integer, lease_ms integer, me uuid
  ) RETURNS TABLE (update_id bigint, status text, lease_id uuid)
  LANGUAGE plpgsql AS `
// The body as PostgreSQL keeps it (`prosrc`): compared before re-creating the function.
const STORE_BODY = `
  #variable_conflict use_column
  BEGIN
    PERFORM pg_advisory_xact_lock(1, k)
    FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest(chat_keys) AS key ORDER BY 1) AS locks;
    RETURN QUERY
    WITH input AS (
      SELECT * FROM unnest(ids, chat_keys, kinds, payloads, skipped, priorities, traceparents)
        WITH ORDINALITY AS t(update_id, chat_key, kind, payload, skipped, priority, traceparent, position)
    ), decided AS MATERIALIZED (
      SELECT i.*, NOT i.skipped AND held.chat_key IS NULL AS free
      FROM input i LEFT JOIN LATERAL (
        SELECT e.chat_key FROM inbox e
        WHERE e.chat_key = i.chat_key AND e.status IN ('pending', 'processing')
          AND (e.status = 'pending' OR e.owner IS DISTINCT FROM me OR e.locked_until <= now())
        LIMIT 1) AS held ON true
    ), ranked AS (
      SELECT d.*, d.free AND count(*) FILTER (WHERE d.free) OVER (ORDER BY d.chat_key, d.update_id) <= leasable AS lease
      FROM decided d
    ), inserted AS (
      INSERT INTO inbox AS x (update_id, chat_key, kind, payload, status, priority, traceparent, finished_at, attempts, lease_id, locked_until, owner)
      SELECT r.update_id, r.chat_key, r.kind, r.payload::jsonb,
             CASE WHEN r.skipped THEN 'skipped' WHEN r.lease THEN 'processing' ELSE 'pending' END,
             r.priority, nullif(r.traceparent, ''),
             CASE WHEN r.skipped THEN now() END,
             CASE WHEN r.lease THEN 1 ELSE 0 END,
             CASE WHEN r.lease THEN gen_random_uuid() END,
             CASE WHEN r.lease THEN now() + lease_ms * interval '1 millisecond' END,
             CASE WHEN r.lease THEN me END
      FROM ranked r ORDER BY r.position
      ON CONFLICT ON CONSTRAINT inbox_pkey DO NOTHING
      RETURNING x.update_id, x.status, x.lease_id
    ), notified AS (
      -- Claimers are woken only for an update that could run now but was not leased (no room in
      -- memory): one behind another owner's update is leased by that update's finish (or, if the
      -- owner died, claimed once the lease expires).
      SELECT pg_notify('${NOTIFY_CHANNEL}', 'inbox') WHERE EXISTS (
        SELECT 1 FROM inserted n JOIN ranked r ON r.update_id = n.update_id WHERE n.status = 'pending' AND r.free)
    )
    SELECT n.update_id, n.status, n.lease_id FROM inserted n LEFT JOIN (SELECT count(*) AS c FROM notified) AS w ON true;
  END`

/**
 * The database functions in their one current text, re-created after a migration run (under the
 * migration lock) whenever the stored text differs: a change is an edit here, never another copy in
 * a new migration. An unchanged function is left alone, so a restart or a rolling deploy does not
 * invalidate the running instances' cached plans of it.
 */
export const createFunctions = Effect.gen(function*() {
  const sql = yield* SqlClient
  const current = yield* sql`SELECT prosrc = ${STORE_BODY} AS same FROM pg_proc WHERE proname = 'steadfast_store'`.pipe(
    decodeRows(Schema.Struct({ same: Schema.Boolean }))
  )
  if (current[0]?.same === true) return
  yield* sql.unsafe(`${STORE_HEADER}$$${STORE_BODY}$$`)
})
