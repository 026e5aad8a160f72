import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Bot API calls a handler wants made, committed in the handler's transaction and
// delivered by the Sender. Calls of one chat are delivered in id order.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE outbox (
      id bigserial PRIMARY KEY,
      chat_key text NOT NULL,
      method text NOT NULL,
      payload jsonb NOT NULL,
      update_id bigint,
      status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
      attempts integer NOT NULL DEFAULT 0,
      available_at timestamptz NOT NULL DEFAULT now(),
      locked_until timestamptz,
      lease_id uuid,
      last_error text,
      created_at timestamptz NOT NULL DEFAULT now(),
      sent_at timestamptz
    )`
  yield* sql`CREATE INDEX outbox_open_by_chat ON outbox (chat_key, id) WHERE status IN ('pending', 'sending')`
  yield* sql`CREATE INDEX outbox_open ON outbox (id) WHERE status IN ('pending', 'sending')`
})
