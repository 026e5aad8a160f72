import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The hot path: an update is written already leased to the instance that stored it when its chat
// has nothing open, and runs from memory; the claim queries are for everything else.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  // Stores a batch of updates. Each chat's first new update is leased at once (up to `leasable`
  // of them) when the chat has no open update. The advisory lock per chat makes the check see every
  // update of the chat committed before it: a plain statement's snapshot could miss one committed
  // by another instance a moment earlier, and both instances would run an update of one chat.
  // Being plpgsql, the INSERT takes its snapshot after the locks are held.
  yield* sql.unsafe(`
    CREATE FUNCTION steadfast_store(
      ids bigint[], chat_keys text[], kinds text[], payloads text[], skipped boolean[],
      priorities smallint[], traceparents text[], leasable integer, lease_ms integer
    ) RETURNS TABLE (update_id bigint, status text, lease_id uuid)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    BEGIN
      PERFORM pg_advisory_xact_lock(1, k)
      FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest(chat_keys) AS key ORDER BY 1) AS locks;
      RETURN QUERY
      WITH input AS (
        SELECT t.*, row_number() OVER (PARTITION BY t.chat_key ORDER BY t.update_id) AS nth_of_chat
        FROM unnest(ids, chat_keys, kinds, payloads, skipped, priorities, traceparents)
          WITH ORDINALITY AS t(update_id, chat_key, kind, payload, skipped, priority, traceparent, position)
      ), decided AS (
        SELECT i.*, NOT i.skipped AND i.nth_of_chat = 1 AND NOT EXISTS (
          SELECT 1 FROM inbox e WHERE e.chat_key = i.chat_key AND e.status IN ('pending', 'processing')) AS free
        FROM input i
      ), ranked AS (
        SELECT d.*, d.free AND count(*) FILTER (WHERE d.free) OVER (ORDER BY d.position) <= leasable AS lease
        FROM decided d
      ), inserted AS (
        INSERT INTO inbox AS x (update_id, chat_key, kind, payload, status, priority, traceparent, finished_at, attempts, lease_id, locked_until)
        SELECT r.update_id, r.chat_key, r.kind, r.payload::jsonb,
               CASE WHEN r.skipped THEN 'skipped' WHEN r.lease THEN 'processing' ELSE 'pending' END,
               r.priority, nullif(r.traceparent, ''),
               CASE WHEN r.skipped THEN now() END,
               CASE WHEN r.lease THEN 1 ELSE 0 END,
               CASE WHEN r.lease THEN gen_random_uuid() END,
               CASE WHEN r.lease THEN now() + lease_ms * interval '1 millisecond' END
        FROM ranked r ORDER BY r.position
        ON CONFLICT ON CONSTRAINT inbox_pkey DO NOTHING
        RETURNING x.update_id, x.status, x.lease_id
      ), notified AS (
        -- Claimers are woken only for an update that could run now but was not leased (no room in
        -- memory): one behind an open update is leased by that update's finish (or, if its owner
        -- died, claimed once the lease expires).
        SELECT pg_notify('steadfast', 'inbox') WHERE EXISTS (
          SELECT 1 FROM inserted n JOIN ranked r ON r.update_id = n.update_id WHERE n.status = 'pending' AND r.free)
      )
      SELECT n.update_id, n.status, n.lease_id FROM inserted n LEFT JOIN (SELECT count(*) AS c FROM notified) AS w ON true;
    END $$`)
  // The claim's "is a later update of this chat running" check is answered by inbox_open_by_chat;
  // a second index of running rows only cost a write on every hand-off.
  yield* sql`DROP INDEX IF EXISTS inbox_processing`
})
