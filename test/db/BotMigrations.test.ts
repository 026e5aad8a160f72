// The bot's own `.sql` migrations on a real PostgreSQL: applied in order with the service's own,
// each once, and a failing file stops start-up with an error naming it.
import { assert, describe, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Composer } from "grammy"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Context, Effect, Exit, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { runMigrations } from "../../src/db/migrations/Migrations.ts"
import { BotMigrationFailed, BotMigrationsDirectory } from "../../src/db/migrations/SqlFiles.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

/** A new folder holding `files` (name → SQL), removed when the test ends. */
const folderOf = (files: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const directory = mkdtempSync(join(tmpdir(), "bot-migrations-"))
      for (const [name, text] of Object.entries(files)) writeFileSync(join(directory, name), text)
      return directory
    }),
    (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
  )

const clientOf = (label: string) =>
  Effect.flatMap(Effect.promise(() => freshDatabase(label)), (url) =>
    Effect.map(
      Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 2, applicationName: "bot-migrations-test" })),
      (context) => ({ url, sql: Context.get(context, SqlClient) })
    ))

/** What the service does at start, with the bot's folder at `directory`. */
const migrate = (sql: SqlClient, directory: string) =>
  runMigrations(sql).pipe(Effect.provideService(SqlClient, sql), Effect.provideService(BotMigrationsDirectory, directory))

const NOTES = `
-- Two statements, a string with a semicolon and a dollar-quoted body: one file, run as written.
CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL);
INSERT INTO notes (text) VALUES ('first; and only');
CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM notes; $$;
`

describe("the bot's .sql migrations", () => {
  it.live("are applied in order after the service's own, each once, recorded in bot_migrations", () =>
    Effect.gen(function*() {
      const { sql } = yield* clientOf("bot_migrations_once")
      const directory = yield* folderOf({
        "0002_notes_index.sql": "CREATE INDEX notes_text ON notes (text);",
        "0001_notes.sql": NOTES,
        "README.md": "not a migration"
      })
      for (const _ of [1, 2]) yield* migrate(sql, directory)

      assert.deepStrictEqual(yield* sql`SELECT migration_id, name FROM bot_migrations ORDER BY migration_id`, [
        { migration_id: 1, name: "notes" },
        { migration_id: 2, name: "notes_index" }
      ])
      assert.deepStrictEqual(yield* sql`SELECT note_count()::int AS n`, [{ n: 1 }], "the file's insert ran once")
      assert.deepStrictEqual(yield* sql`SELECT indexname FROM pg_indexes WHERE indexname = 'notes_text'`, [{ indexname: "notes_text" }])
      const service = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM steadfast_migrations`
      assert.isAbove(service[0]!.n, 0, "the service's migrations ran in the same start-up")
    }), 60_000)

  it.live("a failing file stops start-up with a one-line error naming it; nothing of that start-up is kept", () =>
    Effect.gen(function*() {
      const { sql } = yield* clientOf("bot_migrations_failing")
      const directory = yield* folderOf({
        "0001_notes.sql": NOTES,
        "0002_broken.sql": "ALTER TABLE notes ADD COLUMN ok boolean;\nALTER TABLE nowhere ADD COLUMN x int;"
      })
      const exit = yield* Effect.exit(migrate(sql, directory))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit)
        ? exit.cause.reasons.map((reason) => reason._tag === "Fail" ? reason.error : undefined)[0]
        : undefined
      assert.instanceOf(error, BotMigrationFailed)
      const message = (error as BotMigrationFailed).message
      assert.match(message, /^bot migration \S*0002_broken\.sql failed: relation "nowhere" does not exist$/)
      assert.deepStrictEqual(yield* sql`SELECT to_regclass('notes') IS NULL AS gone, to_regclass('bot_migrations') IS NULL AS unrecorded`, [
        {
          gone: true,
          unrecorded: true
        }
      ])
    }), 60_000)

  it.live("a .sql file without a number is refused by name", () =>
    Effect.gen(function*() {
      const { sql } = yield* clientOf("bot_migrations_unnumbered")
      const directory = yield* folderOf({ "notes.sql": NOTES })
      const error = yield* Effect.flip(migrate(sql, directory))
      assert.match(error.message, /^bot migration \S*notes\.sql failed: not named <number>_<name>\.sql$/)
    }), 60_000)

  it.live("the app applies the folder at start; its handlers use the tables", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("bot_migrations_app"))
      const directory = yield* folderOf({ "0001_notes.sql": NOTES })
      const notes = new Composer<SteadfastContext>()
      notes.command("notes", async (ctx) => {
        const rows = await ctx.sql<{ n: number }>`SELECT note_count()::int AS n`
        await ctx.reply(`notes: ${rows[0]?.n}`)
      })
      const app = yield* Layer.build(testAppLayer({ databaseUrl, handlers: [notes] })).pipe(
        Effect.provideService(BotMigrationsDirectory, directory)
      )
      const base = yield* Effect.provideContext(baseUrl, app)
      const pg = yield* pgProbe(databaseUrl)
      yield* postUpdate(base, sampleUpdate({ updateId: 1, chatId: 840_001, text: "/notes" }))
      yield* eventually("the update done", inboxRow(pg, 1), (row) => row?.status === "done", { timeout: "20 seconds" })
      const replies = (yield* Context.get(app, BotApiRecorder).calls).filter((call) => call.method === "sendMessage")
      assert.deepStrictEqual(replies.map((call) => call.params["text"]), ["notes: 1"])
    }), 60_000)
})
