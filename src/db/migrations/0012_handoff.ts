import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The hot path: an update is written already leased to the instance that stored it when nothing
// else holds its chat, and runs from that instance's memory; the claim queries are for the rest.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  // The instance whose lease a row is under: work of one owner may queue in its memory.
  yield* sql`ALTER TABLE inbox ADD COLUMN owner uuid`
  yield* sql`ALTER TABLE outbox ADD COLUMN owner uuid`
  // steadfast_store, the statement of that hot path, is defined in Functions.ts (its current text).
  // The claim's "is a later update of this chat running" check is answered by inbox_open_by_chat;
  // a second index of running rows only cost a write on every hand-off.
  yield* sql`DROP INDEX IF EXISTS inbox_processing`
})
