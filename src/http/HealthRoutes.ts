import { Clock, Effect, Option } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Database } from "../db/Database.ts"
import { Lifecycle } from "../Lifecycle.ts"

type Status = "pass" | "warn" | "fail"

interface Check {
  readonly observedValue?: unknown
  readonly observedUnit?: string
  readonly status: Status
  readonly time: string
  readonly output?: string
}

const worst = (statuses: ReadonlyArray<Status>): Status =>
  statuses.includes("fail") ? "fail" : statuses.includes("warn") ? "warn" : "pass"

/** A database check may take this long before it counts as failed, so /health always answers fast. */
const CHECK_TIMEOUT = "80 millis"

const health = (body: { readonly status: Status; readonly checks?: Record<string, ReadonlyArray<Check>> }) =>
  HttpServerResponse.jsonUnsafe(body, {
    status: body.status === "fail" ? 503 : 200,
    contentType: "application/health+json",
    headers: { "cache-control": "no-store" }
  })

/**
 * `GET /health` (readiness, IETF health+json) and `GET /health/live` (liveness: touches neither
 * the database nor the network, so a database outage never gets a healthy process killed).
 */
export const HealthRoutes = HttpRouter.use(Effect.fn(function*(router) {
  const db = yield* Database
  const lifecycle = yield* Lifecycle
  const sql = db.sql

  yield* router.add("GET", "/health/live", Effect.sync(() => health({ status: "pass" })))

  yield* router.add("GET", "/health", Effect.gen(function*() {
    if (lifecycle.isDraining()) return health({ status: "fail", checks: {} })
    const now = new Date(yield* Clock.currentTimeMillis).toISOString()
    const started = yield* Clock.currentTimeMillis

    const [ping, backlog] = yield* Effect.all([
      db.withConnection(sql`SELECT 1`, CHECK_TIMEOUT).pipe(Effect.timeoutOption(CHECK_TIMEOUT), Effect.option, Effect.map(Option.flatten)),
      db.withConnection(
        sql<{ pending: number; oldest_seconds: number | null; dead: number }>`
          SELECT
            count(*) FILTER (WHERE status IN ('pending', 'processing'))::int AS pending,
            extract(epoch FROM now() - min(received_at) FILTER (WHERE status IN ('pending', 'processing')))::float8 AS oldest_seconds,
            count(*) FILTER (WHERE status = 'dead')::int AS dead
          FROM inbox WHERE status IN ('pending', 'processing', 'dead')`,
        CHECK_TIMEOUT
      ).pipe(Effect.timeoutOption(CHECK_TIMEOUT), Effect.option, Effect.map(Option.flatten))
    ], { concurrency: "unbounded" })
    const elapsed = (yield* Clock.currentTimeMillis) - started
    const pool = yield* db.stats

    const checks: Record<string, ReadonlyArray<Check>> = {
      "postgres:responseTime": [Option.isSome(ping)
        ? { observedValue: elapsed, observedUnit: "ms", status: "pass", time: now }
        : { status: "fail", time: now, output: "PostgreSQL did not answer in time" }],
      "postgres:connections": [{
        observedValue: { used: pool.used, idle: pool.idle, max: pool.max, pending: pool.pending },
        status: pool.pending > 0 ? "warn" : "pass",
        time: now
      }],
      ...Option.match(Option.flatMap(backlog, (rows) => Option.fromNullishOr(rows[0])), {
        onNone: () => ({ "inbox:backlog": [{ status: "fail" as const, time: now, output: "inbox not readable" }] }),
        onSome: (row) => ({
          "inbox:backlog": [{
            observedValue: { pending: row.pending, oldestSeconds: row.oldest_seconds ?? 0 },
            status: (row.oldest_seconds ?? 0) > 60 ? "warn" as const : "pass" as const,
            time: now
          }],
          "inbox:dead": [{ observedValue: row.dead, status: row.dead > 0 ? "warn" as const : "pass" as const, time: now }]
        })
      }),
      "process:uptime": [{ observedValue: Math.round(process.uptime()), observedUnit: "s", status: "pass", time: now }],
      "process:memory": [{ observedValue: process.memoryUsage().rss, observedUnit: "bytes", status: "pass", time: now }]
    }
    return health({ status: worst(Object.values(checks).flatMap((list) => list.map((check) => check.status))), checks })
  }))
}))
