// `npm run migrate`: applies the pending migrations to DATABASE_URL and exits, so a deploy can
// migrate once (a compose one-shot service, a Kubernetes Job) before its replicas start. The
// replicas still migrate at start; after this step that finds nothing to do.
// Exit codes: 0 migrated (or nothing to do), 1 bad configuration or the database refused.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Exit, Option, Schema } from "effect"
import { databaseTarget, InvalidConfig } from "../Config.ts"
import { Logging } from "../observability/Logging.ts"
import { Database } from "./Database.ts"
import { decodeRows } from "./Rows.ts"

/** The pool's warm minimum; migrations use one connection of it. */
const POOL_SIZE = 2

const Latest = Schema.Struct({ name: Schema.NullOr(Schema.String) })

const migrate = Effect.gen(function*() {
  const target = yield* databaseTarget
  if (Option.isNone(target) || target.value._tag !== "url") {
    return yield* new InvalidConfig({ variable: "DATABASE_URL", reason: "must be the postgres:// URL of the database to migrate" })
  }
  // Building the pool applies the migrations, under their advisory lock (src/db/migrations/Migrations.ts).
  yield* Effect.gen(function*() {
    const { sql } = yield* Database
    const rows = yield* sql`
      SELECT lpad(migration_id::text, 4, '0') || '_' || name AS name FROM steadfast_migrations ORDER BY migration_id DESC LIMIT 1`
      .pipe(decodeRows(Latest))
    const latest = rows[0]?.name ?? "none"
    yield* Effect.logInfo(`database schema is at migration ${latest}`)
  }).pipe(Effect.provide(Database.layerUrl(target.value.url, POOL_SIZE)))
})

migrate.pipe(
  Effect.tapCause((cause) => {
    const error = cause.reasons.find(Cause.isFailReason)?.error
    return error instanceof InvalidConfig
      ? Console.error(`steadfast migrate: invalid configuration: ${error.message}`)
      : Effect.logFatal("migrations failed", cause)
  }),
  Effect.provide(Logging.layer),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? 0 : 1)
  })
)
