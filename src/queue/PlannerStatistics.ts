import { Effect, Schedule, Schema, type Scope } from "effect"
import type { Database } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"

const decodeStale = decodeRows(Schema.Struct({ relname: Schema.Literals(["inbox", "outbox"]) }))

/**
 * The queue's statements need current statistics: without them PostgreSQL plans a scan of every
 * open row, and autovacuum wakes only once a minute, far too late for a burst. A table that has
 * doubled since its last ANALYZE is analyzed within a second (its cached plans were made for a
 * table half its size); otherwise churn is caught up every five. Cheap when idle.
 */
export const keepPlannerStatisticsFresh = (db: Database["Service"]): Effect.Effect<void, never, Scope.Scope> =>
  db.withConnection(
    Effect.gen(function*() {
      const stale = yield* db.sql`
        SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.relname IN ('inbox', 'outbox') AND s.n_mod_since_analyze > greatest(500, s.n_live_tup / 5)
          AND (s.n_live_tup > 2 * c.reltuples
               OR coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity') < now() - interval '5 seconds')`.pipe(
        decodeStale
      )
      for (const { relname } of stale) yield* db.sql.unsafe(`ANALYZE ${relname}`)
    }),
    "1 second"
  ).pipe(
    Effect.catchCause((cause) => Effect.logDebug("refreshing queue statistics failed", cause)),
    Effect.repeat(Schedule.spaced("1 second")),
    Effect.asVoid,
    Effect.forkScoped,
    Effect.asVoid
  )
