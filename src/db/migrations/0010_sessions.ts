import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// grammY sessions, written through the update's transaction (src/bot/SessionStorage.ts).
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE sessions (
      key text PRIMARY KEY,
      value jsonb NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`
})
