import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The claim asks "does this chat have an update running?" for every candidate: a tiny index of
// running rows answers it without touching the backlog.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE INDEX inbox_processing ON inbox (chat_key, update_id) WHERE status = 'processing'`
})
