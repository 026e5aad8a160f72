import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The queue's per-chat questions ("is this chat busy", "which is its oldest open row") must cost
// one index probe per row whatever the statistics say: in a burst the open rows number thousands,
// while statistics taken in a quiet spell call them a handful.
// - steadfast_store asked with NOT EXISTS, which the planner may turn into one hashed scan of every
//   open update, once per reference to the answer (three per batch). A LATERAL probe with LIMIT 1
//   cannot be hashed, and MATERIALIZED computes it once per row.
// - Even so, a probe could read inbox_open (the claims' index, same predicate) whole and filter it by
//   chat, since statistics said it was tiny: 20,000 rows per probe in a burst. The claims' indexes
//   now also name `attempts >= 0` (true of every row): only the claims, which say so, can use them,
//   and a probe, which does not, can only use the index that leads with its chat.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`DROP INDEX inbox_open`
  yield* sql`CREATE INDEX inbox_open ON inbox (priority DESC, update_id) WHERE status IN ('pending', 'processing') AND attempts >= 0`
  yield* sql`DROP INDEX outbox_open`
  yield* sql`CREATE INDEX outbox_open ON outbox (id) WHERE status IN ('pending', 'sending') AND attempts >= 0`
  // The function of 0012_handoff (its comment says what it decides), with the probe.
  yield* sql.unsafe(`
    CREATE OR REPLACE FUNCTION steadfast_store(
      ids bigint[], chat_keys text[], kinds text[], payloads text[], skipped boolean[],
      priorities smallint[], traceparents text[], leasable integer, lease_ms integer, me uuid
    ) RETURNS TABLE (update_id bigint, status text, lease_id uuid)
    LANGUAGE plpgsql AS $$
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
        SELECT pg_notify('steadfast', 'inbox') WHERE EXISTS (
          SELECT 1 FROM inserted n JOIN ranked r ON r.update_id = n.update_id WHERE n.status = 'pending' AND r.free)
      )
      SELECT n.update_id, n.status, n.lease_id FROM inserted n LEFT JOIN (SELECT count(*) AS c FROM notified) AS w ON true;
    END $$`)
})
