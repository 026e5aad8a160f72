import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Schema } from "effect"
import { BACKLOG_QUERY } from "../../src/queue/Backlog.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { type PgProbe, pgProbe } from "../support/TestDatabase.ts"

interface PlanNode {
  readonly "Node Type": string
  readonly "Relation Name"?: string
  readonly "Index Name"?: string
  readonly "Shared Hit Blocks": number
  readonly "Shared Read Blocks": number
  readonly Plans?: ReadonlyArray<PlanNode>
}

const ExplainRow = Schema.Struct({ "QUERY PLAN": Schema.Array(Schema.Struct({ Plan: Schema.Unknown })) })

/** Runs the backlog query under EXPLAIN (ANALYZE, BUFFERS): the buffers it touched and the tables it scanned whole. */
const explainBacklog = (pg: PgProbe) =>
  Effect.gen(function*() {
    const rows = yield* pg.rows(ExplainRow, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${BACKLOG_QUERY}`)
    // The JSON's shape is PostgreSQL's; only the fields read here are typed.
    const root = rows[0]!["QUERY PLAN"][0]!.Plan as PlanNode
    const nodes: Array<PlanNode> = []
    const walk = (node: PlanNode): void => {
      nodes.push(node)
      node.Plans?.forEach(walk)
    }
    walk(root)
    return {
      // A node's buffer counts include those of the nodes below it.
      buffers: root["Shared Hit Blocks"] + root["Shared Read Blocks"],
      seqScans: nodes.filter((node) => node["Node Type"] === "Seq Scan").map((node) => node["Relation Name"] ?? "?"),
      scans: nodes.filter((node) => node["Node Type"].includes("Scan")).map((node) =>
        `${node["Node Type"]} ${node["Index Name"] ?? node["Relation Name"] ?? ""}`
      )
    }
  })

/** Finished rows up to update_id `upTo`, inserted by the server itself. */
const fillDone = (pg: PgProbe, from: number, upTo: number) =>
  Effect.andThen(
    pg.query(
      `
      INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, finished_at)
      SELECT g, 'chat:' || (g % 5000), 'message', '{}', 'done', 1, now() FROM generate_series($1::bigint, $2::bigint) g`,
      [from, upTo]
    ),
    pg.query("ANALYZE inbox")
  )

const backlogCalls = (pg: PgProbe) =>
  Effect.map(
    pg.rows(
      Schema.Struct({ calls: Schema.Number }),
      `
      SELECT coalesce(sum(calls), 0)::int AS calls FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND query LIKE '%AS dead%' AND query LIKE '%AS outbox%' AND query NOT LIKE 'EXPLAIN%'`
    ),
    (rows) => rows[0]?.calls ?? 0
  )

describe("/health cost", () => {
  it.live(
    "the backlog query touches as many buffers with 1,000,000 finished inbox rows as with 10,000, scans no table whole, and a burst of /health requests costs one query per second",
    () =>
      Effect.gen(function*() {
        // A server of our own: pg_stat_statements must be preloaded to count the queries.
        const cluster = yield* Effect.acquireRelease(
          Effect.promise(() => startCluster(["-c", "shared_preload_libraries=pg_stat_statements"])),
          (cluster) => Effect.promise(() => cluster.dispose())
        )
        const url = yield* Effect.promise(() => createDatabase(cluster.url("postgres"), "health_cost"))
        const pg = yield* pgProbe(url)
        yield* pg.query("CREATE EXTENSION pg_stat_statements")

        yield* Effect.gen(function*() {
          // A few dead letters and open rows (not due for a day, so the app leaves them alone) keep every index non-empty.
          yield* pg.query(`
          INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, finished_at, available_at)
          SELECT g, 'chat:open' || g, 'message', '{}', CASE WHEN g % 2 = 0 THEN 'dead' ELSE 'pending' END, 1,
                 CASE WHEN g % 2 = 0 THEN now() END, now() + interval '1 day'
          FROM generate_series(2000001, 2000010) g`)
          yield* fillDone(pg, 1, 10_000)
          const small = yield* explainBacklog(pg)
          yield* fillDone(pg, 10_001, 1_000_000)
          const large = yield* explainBacklog(pg)
          yield* Effect.log(
            `backlog query buffers: ${small.buffers} with 10k finished rows, ${large.buffers} with 1M (${large.scans.join(", ")})`
          )
          assert.deepStrictEqual(large.seqScans, [], "no table is scanned whole")
          assert.isAtMost(large.buffers, small.buffers, `buffers with 1M rows (${large.buffers}) vs 10k (${small.buffers})`)

          const base = yield* baseUrl
          yield* pg.query("SELECT pg_stat_statements_reset()")
          const started = yield* Clock.currentTimeMillis
          const answers = yield* Effect.forEach(
            Array.from({ length: 50 }),
            () => Effect.promise(() => fetch(`${base}/health`).then((response) => response.status)),
            { concurrency: "unbounded" }
          )
          const elapsedMs = (yield* Clock.currentTimeMillis) - started
          assert.isTrue(answers.every((status) => status === 200 || status === 503), answers.join(","))
          const calls = yield* backlogCalls(pg)
          // The metrics sampler asks for the backlog too, every 5 s.
          const allowed = 1 + Math.floor(elapsedMs / 1_000) + 1 + Math.floor(elapsedMs / 5_000)
          yield* Effect.log(`50 concurrent /health requests over ${elapsedMs} ms: ${calls} backlog queries`)
          assert.isAtLeast(calls, 1)
          assert.isAtMost(calls, allowed)
        }).pipe(Effect.provide(testAppLayer({ databaseUrl: url })))
      }),
    60_000
  )
})
