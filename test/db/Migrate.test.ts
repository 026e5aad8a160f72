// `npm run migrate` (src/db/migrate.ts) as a real process against a real database.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { NOTIFY_CHANNEL } from "../../src/db/migrations/Functions.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const ENTRY = "src/db/migrate.ts"
const migrationFiles = fs.readdirSync(`${root}src/db/migrations`).filter((file) => /^\d{4}_.+\.ts$/.test(file)).sort()

const runMigrate = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const run = yield* spawnService({ LOG_FORMAT: "json", ...env }, {
      waitForListening: false,
      command: [process.execPath, `${root}${ENTRY}`]
    })
    const exited = yield* run.exited
    return { exited, output: yield* run.output }
  })

describe("npm run migrate", () => {
  it("is the script that runs this entry", () => {
    const scripts = (JSON.parse(fs.readFileSync(`${root}package.json`, "utf8")) as { scripts: Record<string, string> }).scripts
    assert.strictEqual(scripts["migrate"], `node ${ENTRY}`)
  })

  it.live("applies every migration to an empty database and exits 0; a second run finds nothing to do and exits 0", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("migrate"))
      const first = yield* runMigrate({ DATABASE_URL: databaseUrl })
      assert.deepStrictEqual(first.exited, { code: 0, signal: null }, first.output)
      const latest = migrationFiles.at(-1)!.replace(/\.ts$/, "")
      assert.match(first.output, /applied migrations: 0*1_inbox, /)
      assert.include(first.output, `database schema is at migration ${latest}`)
      const pg = yield* pgProbe(databaseUrl)
      const applied = yield* pg.rows(
        Schema.Struct({ migration_id: Schema.Number }),
        "SELECT migration_id FROM steadfast_migrations ORDER BY migration_id"
      )
      assert.strictEqual(applied.length, migrationFiles.length)
      // The tables the service needs exist without the service having started.
      const tables = yield* pg.rows(
        Schema.Struct({ inbox: Schema.String, outbox: Schema.String }),
        "SELECT to_regclass('inbox')::text AS inbox, to_regclass('outbox')::text AS outbox"
      )
      assert.deepStrictEqual(tables, [{ inbox: "inbox", outbox: "outbox" }])

      // The store function has one text (Functions.ts), re-created by every run: an outdated one is replaced.
      yield* pg.query(
        `CREATE OR REPLACE FUNCTION steadfast_store(ids bigint[], chat_keys text[], kinds text[], payloads text[], skipped boolean[],
           priorities smallint[], traceparents text[], leasable integer, lease_ms integer, me uuid)
         RETURNS TABLE (update_id bigint, status text, lease_id uuid) LANGUAGE sql AS 'SELECT NULL::bigint, NULL::text, NULL::uuid'`
      )
      const second = yield* runMigrate({ DATABASE_URL: databaseUrl })
      assert.deepStrictEqual(second.exited, { code: 0, signal: null }, second.output)
      assert.notInclude(second.output, "applied migrations")
      assert.include(second.output, `database schema is at migration ${latest}`)
      const [store] = yield* pg.rows(
        Schema.Struct({ definition: Schema.String }),
        "SELECT pg_get_functiondef('steadfast_store'::regproc) AS definition"
      )
      assert.include(store?.definition, "pg_advisory_xact_lock")
      assert.include(store?.definition, `pg_notify('${NOTIFY_CHANNEL}', 'inbox')`)
      // An unchanged function is left alone: its catalog row is not rewritten by the next run.
      const version = pg.rows(
        Schema.Struct({ xmin: Schema.String }),
        "SELECT xmin::text AS xmin FROM pg_proc WHERE proname = 'steadfast_store'"
      )
      const before = yield* version
      const third = yield* runMigrate({ DATABASE_URL: databaseUrl })
      assert.deepStrictEqual(third.exited, { code: 0, signal: null }, third.output)
      assert.deepStrictEqual(yield* version, before)
    }).pipe(Effect.scoped))

  it.live("without a database URL it exits 1 with one line naming DATABASE_URL", () =>
    Effect.gen(function*() {
      const run = yield* runMigrate({})
      assert.deepStrictEqual(run.exited, { code: 1, signal: null })
      assert.strictEqual(
        run.output.trim(),
        "steadfast migrate: invalid configuration: DATABASE_URL: must be the postgres:// URL of the database to migrate"
      )
    }).pipe(Effect.scoped))

  it.live("an unreachable database exits 1 without printing the password", () =>
    Effect.gen(function*() {
      const run = yield* runMigrate({ DATABASE_URL: "postgres://steadfast:hunter2-secret@127.0.0.1:9/steadfast" })
      assert.deepStrictEqual(run.exited, { code: 1, signal: null })
      assert.include(run.output, "migrations failed")
      assert.notInclude(run.output, "hunter2-secret")
    }).pipe(Effect.scoped))
})
