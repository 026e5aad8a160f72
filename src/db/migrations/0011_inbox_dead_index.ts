import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// /health counts dead letters on every check. Without an index of its own that count read every
// finished row (a full scan: past about a million rows it overran the check's 80 ms, and every
// instance left readiness at once). Dead letters are few, so this index stays tiny.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE INDEX inbox_dead ON inbox (update_id) WHERE status = 'dead'`
})
