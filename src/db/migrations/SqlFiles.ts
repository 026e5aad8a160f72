// The bot's own tables: plain `.sql` files in a folder of the bot (src/bot/migrations/ by default),
// applied in the order of their numbers, each once, recorded in `bot_migrations`. They run after
// the service's migrations, in the same start-up transaction.
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { Context, Effect, Schema } from "effect"
import type * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"

/** The folder of the bot's `.sql` migrations; tests point it elsewhere. */
export const BotMigrationsDirectory = Context.Reference<string>("steadfast/db/BotMigrationsDirectory", {
  defaultValue: () => fileURLToPath(new URL("../../bot/migrations", import.meta.url))
})

/** A bot migration that could not be read or applied: start-up stops, naming the file. */
export class BotMigrationFailed extends Schema.TaggedError<BotMigrationFailed>()("BotMigrationFailed", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `bot migration ${this.file} failed: ${this.reason}`
  }
}

const FILE_NAME = /^(\d+)_(.+)\.sql$/

/** The first line of what went wrong, from the innermost error that says something. */
const reasonOf = (error: unknown): string => {
  let message = "unknown error"
  for (let current = error; current instanceof Error; current = current.cause) {
    if (current.message !== "") message = current.message
  }
  return message.split("\n")[0]!
}

/** Dollar-quote tags for `text` that occur nowhere in it. */
const freeTags = (text: string): readonly [string, string] => {
  let n = 0
  while (text.includes(`$steadfast_do${n}$`) || text.includes(`$steadfast_sql${n}$`)) n += 1
  return [`$steadfast_do${n}$`, `$steadfast_sql${n}$`]
}

// The driver speaks only PostgreSQL's extended protocol, which takes one statement per query. A
// file holds many: PL/pgSQL's EXECUTE runs them all, split by PostgreSQL's own parser (strings,
// dollar-quoted bodies and comments included), in the start-up transaction.
const runFile = (sql: SqlClient, text: string) => {
  const [outer, inner] = freeTags(text)
  return sql.unsafe(`DO ${outer} BEGIN EXECUTE ${inner}${text}${inner}; END ${outer}`)
}

/**
 * The `NNNN_name.sql` files of `directory` as migrations, by number. Other files are ignored, a
 * `.sql` file without a number is refused, and a missing folder means no migrations.
 */
export const sqlFileMigrations = Effect.fnUntraced(function*(directory: string) {
  const shown = (file: string) => relative(process.cwd(), join(directory, file)) || file
  const files = yield* Effect.try({
    try: () => existsSync(directory) ? readdirSync(directory).filter((file) => file.endsWith(".sql")).sort() : [],
    catch: (error) => new BotMigrationFailed({ file: shown(""), reason: reasonOf(error) })
  })
  const migrations: Array<Migrator.ResolvedMigration> = []
  for (const file of files) {
    const match = FILE_NAME.exec(file)
    if (match === null) {
      return yield* new BotMigrationFailed({ file: shown(file), reason: "not named <number>_<name>.sql" })
    }
    const text = yield* Effect.try({
      try: () => readFileSync(join(directory, file), "utf8"),
      catch: (error) => new BotMigrationFailed({ file: shown(file), reason: reasonOf(error) })
    })
    const apply = Effect.flatMap(SqlClient, (sql) => runFile(sql, text)).pipe(
      Effect.mapError((error) => new BotMigrationFailed({ file: shown(file), reason: reasonOf(error) }))
    )
    migrations.push([Number(match[1]), match[2]!, Effect.succeed(apply)])
  }
  return migrations.sort(([a], [b]) => a - b)
})
