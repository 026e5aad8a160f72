import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Small pieces of state the service keeps for itself (e.g. the registered webhook's fingerprint).
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL)`
})
