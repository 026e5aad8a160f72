import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Telegram ids exceed 2^31: bigint.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE users (
      telegram_id bigint PRIMARY KEY,
      username text,
      first_name text,
      language_code text,
      first_seen timestamptz NOT NULL DEFAULT now(),
      last_seen timestamptz NOT NULL DEFAULT now()
    )`
})
