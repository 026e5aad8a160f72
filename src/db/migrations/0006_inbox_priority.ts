import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Time-critical updates (Telegram cancels a payment unless its pre-checkout query is answered
// within 10 s) are claimed before any backlog of ordinary ones.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE inbox ADD COLUMN priority smallint NOT NULL DEFAULT 0`
  yield* sql`DROP INDEX inbox_open`
  yield* sql`CREATE INDEX inbox_open ON inbox (priority DESC, update_id) WHERE status IN ('pending', 'processing')`
})
