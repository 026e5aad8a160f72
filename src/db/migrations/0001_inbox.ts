import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Every update Telegram delivers, keyed by update_id so a redelivery is a no-op.
// `chat_key` orders work: updates of one key run one at a time in update_id order.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE inbox (
      update_id bigint PRIMARY KEY,
      chat_key text NOT NULL,
      kind text NOT NULL,
      payload jsonb NOT NULL,
      status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'done', 'dead', 'skipped')),
      attempts integer NOT NULL DEFAULT 0,
      available_at timestamptz NOT NULL DEFAULT now(),
      locked_until timestamptz,
      lease_id uuid,
      last_error text,
      traceparent text,
      trace_id text,
      received_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz
    )`
  // Only open rows are indexed: the claim query looks at nothing else.
  yield* sql`CREATE INDEX inbox_open_by_chat ON inbox (chat_key, update_id) WHERE status IN ('pending', 'processing')`
  yield* sql`CREATE INDEX inbox_open ON inbox (update_id) WHERE status IN ('pending', 'processing')`
  yield* sql`CREATE INDEX inbox_finished ON inbox (finished_at) WHERE status IN ('done', 'skipped')`
})
