import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Bot API calls are made when a handler makes them. The results a re-run of the update needs, so
// that it does not make them again, are kept on the update's row: written by the statement that
// records a failed attempt (no extra statement, no extra row version) and cleared when it is done.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE inbox ADD COLUMN calls jsonb`
})
