import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Inbox and outbox churn fast (insert, update twice, delete later). With the default thresholds
// their statistics lag far behind and the claim queries get plans that scan every open row.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  for (const table of ["inbox", "outbox"]) {
    yield* sql.unsafe(
      `ALTER TABLE ${table} SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 200, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 500)`
    )
  }
})
