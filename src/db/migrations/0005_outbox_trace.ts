import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The span that queued a call, so its delivery joins the same trace.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE outbox ADD COLUMN traceparent text`
})
