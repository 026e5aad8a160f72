import { Effect } from "effect"
import * as Migrator from "effect/sql/Migrator"
import type { SqlClient } from "effect/sql/SqlClient"
import inbox from "./0001_inbox.ts"
import outbox from "./0003_outbox.ts"
import settings from "./0004_settings.ts"
import outboxTrace from "./0005_outbox_trace.ts"
import inboxPriority from "./0006_inbox_priority.ts"
import payments from "./0007_payments.ts"
import autovacuum from "./0008_autovacuum.ts"
import inboxProcessingIndex from "./0009_inbox_processing_index.ts"
import sessions from "./0010_sessions.ts"
import inboxDeadIndex from "./0011_inbox_dead_index.ts"
import handoff from "./0012_handoff.ts"
import storeProbes from "./0013_store_probes.ts"
import recordedCalls from "./0014_recorded_calls.ts"
import operations from "./0015_operations.ts"
import { createFunctions } from "./Functions.ts"
import { BotMigrationFailed, BotMigrationsDirectory, sqlFileMigrations } from "./SqlFiles.ts"

const migrate = Migrator.make({})

/** An arbitrary constant naming the migration lock among PostgreSQL advisory locks. */
const MIGRATION_LOCK = 7_346_281_001

/** The service's migrations, its functions (Functions.ts), then the bot's own `.sql` files (SqlFiles.ts), each recorded in its own table. */
const migrateAll = Effect.gen(function*() {
  const service = yield* migrate({
    loader: Migrator.fromRecord({
      "0001_inbox": inbox,
      // 0002 (users) is now the shipped bot's own src/bot/migrations/0001_users.sql.
      "0003_outbox": outbox,
      "0004_settings": settings,
      "0005_outbox_trace": outboxTrace,
      "0006_inbox_priority": inboxPriority,
      "0007_payments": payments,
      "0008_autovacuum": autovacuum,
      "0009_inbox_processing_index": inboxProcessingIndex,
      "0010_sessions": sessions,
      "0011_inbox_dead_index": inboxDeadIndex,
      "0012_handoff": handoff,
      "0013_store_probes": storeProbes,
      "0014_recorded_calls": recordedCalls,
      "0015_operations": operations
    }),
    table: "steadfast_migrations"
  })
  yield* createFunctions
  const files = yield* sqlFileMigrations(yield* BotMigrationsDirectory)
  const bot = yield* migrate({ loader: Effect.succeed(files), table: "bot_migrations" }).pipe(
    // The migrator wraps a file's failure in its own error: the file's own names it.
    Effect.catchTag("MigrationError", (error) => Effect.fail(error.cause instanceof BotMigrationFailed ? error.cause : error))
  )
  const show = (applied: ReadonlyArray<readonly [number, string]>) => applied.map(([id, name]) => `${id}_${name}`).join(", ")
  if (service.length > 0) yield* Effect.logInfo(`applied migrations: ${show(service)}`)
  if (bot.length > 0) yield* Effect.logInfo(`applied bot migrations: ${show(bot)}`)
})

/**
 * Applies pending migrations. Instances starting at once serialize on a transaction-level
 * advisory lock taken before the migrations table is even created; the migrator's own
 * transaction nests inside as a savepoint, so the lock is held until everything commits.
 */
export const runMigrations = (sql: SqlClient) =>
  sql.withTransaction(
    Effect.andThen(
      // Waiting for another instance's migrations and building an index on a large table may both
      // take longer than the sessions' default statement_timeout.
      Effect.andThen(sql`SET LOCAL statement_timeout = 0`, sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`),
      migrateAll
    )
  ).pipe(Effect.withSpan("Migrations.run"))
