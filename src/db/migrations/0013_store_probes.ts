import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// The queue's per-chat questions ("is this chat busy", "which is its oldest open row") must cost
// one index probe per row whatever the statistics say: in a burst the open rows number thousands,
// while statistics taken in a quiet spell call them a handful.
// - steadfast_store (now in Functions.ts) asked with NOT EXISTS, which the planner may turn into one
//   hashed scan of every open update; it now probes with LATERAL ... LIMIT 1.
// - Even so, a probe could read inbox_open (the claims' index, same predicate) whole and filter it by
//   chat, since statistics said it was tiny: 20,000 rows per probe in a burst. The claims' indexes
//   now also name `attempts >= 0` (true of every row): only the claims, which say so, can use them,
//   and a probe, which does not, can only use the index that leads with its chat.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`DROP INDEX inbox_open`
  yield* sql`CREATE INDEX inbox_open ON inbox (priority DESC, update_id) WHERE status IN ('pending', 'processing') AND attempts >= 0`
  yield* sql`DROP INDEX outbox_open`
  yield* sql`CREATE INDEX outbox_open ON outbox (id) WHERE status IN ('pending', 'sending') AND attempts >= 0`
})
