import { assert, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { runMigrations } from "../../src/db/migrations/Migrations.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

const Migrated = Layer.effectDiscard(Effect.flatMap(SqlClient, runMigrations)).pipe(
  Layer.provideMerge(
    Layer.unwrap(Effect.map(
      Effect.promise(() => freshDatabase("store_cost")),
      (url) => PgClient.layer({ url: Redacted.make(url), maxConnections: 2, applicationName: "store-cost-test" })
    ))
  )
)

const ME = "00000000-0000-4000-8000-000000000001"
let nextUpdateId = 1

/** Open (pending) updates of `count` other chats, written behind the statistics' back. */
const openUpdates = (sql: SqlClient, count: number) => {
  const from = nextUpdateId
  nextUpdateId += count
  return sql`
    INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts)
    SELECT g, 'other:' || g, 'message', '{}', 'pending', 0 FROM generate_series(${from}::bigint, ${nextUpdateId - 1}::bigint) g`
}

/** Buffers touched by one call of steadfast_store for 10 updates of new chats (its own statements included). */
const storeBuffers = (sql: SqlClient) =>
  Effect.gen(function*() {
    const ids = Array.from({ length: 10 }, () => nextUpdateId++)
    const rows = yield* sql.unsafe<
      { "QUERY PLAN": ReadonlyArray<{ Plan: { "Shared Hit Blocks": number; "Shared Read Blocks": number } }> }
    >(
      `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
       SELECT * FROM steadfast_store($1::bigint[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::smallint[], $7::text[], 1000, 10000, $8::uuid)`,
      [
        ids,
        ids.map((id) => `new:${id}`),
        ids.map(() => "message"),
        ids.map((id) => JSON.stringify({ update_id: id })),
        ids.map(() => false),
        ids.map(() => 0),
        ids.map(() => ""),
        ME
      ]
    )
    const plan = rows[0]!["QUERY PLAN"][0]!.Plan
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
  })

layer(Migrated, { excludeTestServices: true, timeout: 60_000 })("the store's cost during a burst", (it) => {
  it.effect(
    "asking whether each stored update's chat is busy touches as many buffers with 20,000 open updates as with 500, with statistics taken before them",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        // Statistics of a table whose updates are all done, as after a quiet spell: a burst outruns them.
        yield* sql`
          INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, finished_at)
          SELECT g, 'done:' || g, 'message', '{}', 'done', 1, now() FROM generate_series(1000001, 1005000) g`
        yield* sql`ANALYZE inbox`
        // The first call of a session also reads the catalog.
        yield* storeBuffers(sql)
        yield* openUpdates(sql, 500)
        const few = yield* storeBuffers(sql)
        yield* openUpdates(sql, 19_500)
        const many = yield* storeBuffers(sql)
        yield* Effect.log(`steadfast_store of 10 updates: ${few} buffers with 500 open updates, ${many} with 20,000`)
        // A scan of every open update would touch hundreds of pages more; a probe per row a few.
        assert.isAtMost(many, few + 20, `buffers with 20,000 open updates (${many}) vs 500 (${few})`)
      })
  )
})
