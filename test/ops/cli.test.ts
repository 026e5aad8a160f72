import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Queue, Redacted, Schema } from "effect"
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Database } from "../../src/db/Database.ts"
import { EmbeddedDatabase } from "../../src/db/EmbeddedDatabase.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { faultyThenShipped, makeProbe, MARKS_TABLE_DDL } from "../support/handlers/FaultyHandlers.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { type OpsResult, runOps } from "./OpsProcess.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { freshDatabase, type PgProbe, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

/**
 * A fresh, migrated database: its URL, the app's client for seeding and listening, and the
 * kit's probe for looking.
 */
const setup = (label: string, url?: string) =>
  Effect.gen(function*() {
    const databaseUrl = url ?? (yield* Effect.promise(() => freshDatabase(`ops_${label}`)))
    const context = yield* Layer.build(Database.layerUrl(Redacted.make(databaseUrl), 4))
    return {
      url: databaseUrl,
      sql: Context.get(context, Database).sql,
      pg: Context.get(context, PgClient.PgClient),
      probe: yield* pgProbe(databaseUrl)
    }
  })

interface Seed {
  readonly id: number
  readonly status: "pending" | "processing" | "done" | "skipped" | "dead"
  readonly chatId?: number
  readonly attempts?: number
  readonly lastError?: string
  readonly traceId?: string
  /** e.g. "8 days"; finished rows only. */
  readonly finishedAgo?: string
  readonly receivedAgo?: string
  /** Pending rows in a retry backoff become runnable this far ahead. */
  readonly availableIn?: string
  readonly text?: string
}

const insertUpdate = (sql: Database["Service"]["sql"], seed: Seed) => {
  const update = sampleUpdate({ updateId: seed.id, chatId: seed.chatId ?? 880_000 + seed.id, text: seed.text ?? "/start" })
  const finished = seed.status === "done" || seed.status === "skipped" || seed.status === "dead"
  return sql`
    INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, last_error, trace_id,
                       received_at, finished_at, available_at, locked_until)
    VALUES (${seed.id}, ${`chat:${update.message.chat.id}`}, 'message', ${JSON.stringify(update)}::jsonb, ${seed.status},
            ${seed.attempts ?? 0}, ${seed.lastError ?? null}, ${seed.traceId ?? null},
            now() - ${seed.receivedAgo ?? seed.finishedAgo ?? "1 minute"}::interval,
            ${finished ? sql`now() - ${seed.finishedAgo ?? "1 minute"}::interval` : null},
            now() + ${seed.availableIn ?? "0 seconds"}::interval,
            ${seed.status === "processing" ? sql`now() + interval '1 minute'` : null})`
}

const insertCall = (sql: Database["Service"]["sql"], call: { readonly updateId: number; readonly status: string; readonly ago?: string }) =>
  sql`
    INSERT INTO outbox (chat_key, method, payload, update_id, status, created_at, available_at, sent_at, last_error)
    VALUES ('chat:1', 'sendMessage', '{"chat_id":1,"text":"hi"}'::jsonb, ${call.updateId}, ${call.status},
            now() - ${call.ago ?? "1 minute"}::interval, now() - ${call.ago ?? "1 minute"}::interval,
            ${call.status === "sent" ? sql`now() - ${call.ago ?? "1 minute"}::interval` : null},
            ${call.status === "failed" ? "Bot API 403: Forbidden: bot was blocked by the user" : null})`

const InboxState = Schema.Struct({
  status: Schema.String,
  attempts: Schema.Number,
  last_error: Schema.NullOr(Schema.String),
  finished: Schema.Boolean,
  runnable: Schema.Boolean
})

const inboxRow = (probe: PgProbe, id: number) =>
  Effect.map(
    probe.rows(
      InboxState,
      `SELECT status, attempts, last_error, finished_at IS NOT NULL AS finished, available_at <= now() AS runnable
       FROM inbox WHERE update_id = $1`,
      [id]
    ),
    (rows) => Option.fromNullishOr(rows[0])
  )

const inboxIds = (probe: PgProbe) =>
  Effect.map(
    probe.rows(Schema.Struct({ id: Schema.Number }), "SELECT update_id::int AS id FROM inbox ORDER BY update_id"),
    (rows) => rows.map((row) => row.id)
  )

const lines = (text: string) => text.split("\n").filter((line) => line !== "")

/** The database line every command that touches the database prints on stderr, password removed. */
const databaseLine = (url: string) => {
  const parsed = new URL(url)
  parsed.password = ""
  return `ops: database: ${parsed.toString()}`
}

const assertSuccess = (result: OpsResult, url: string) => {
  assert.strictEqual(result.code, 0, `exit code; stderr: ${result.stderr}`)
  assert.deepStrictEqual(lines(result.stderr), [databaseLine(url)])
  assert.notInclude(result.stderr + result.stdout, "postgres:postgres@", "the password is never printed")
}

/** A scratch directory the embedded server's own user can enter (as root it runs as `postgres`). */
const scratchDir = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(join(tmpdir(), "steadfast-ops-"))
    chmodSync(dir, 0o777)
    return dir
  }),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

// Every command is a Node process start (about a second of CPU). The tests run one after the
// other so that a test's time is its own processes' time; on a loaded machine several of them
// still need more than the default minute.
const SLOW = 180_000

/** How a failed query's error is stored: PostgreSQL's message last, under two generic ones and their stacks. */
const PG_ERROR = [
  "effect/sql/SqlError: PgConnection: Query failed",
  "    at QueryMachine.onMessage (PgConnection.js:1027:26)",
  "    at dispatch (PgConnection.js:182:59) {",
  "  [cause]: effect/sql/SqlError/ConstraintError: PgConnection: Query failed",
  "      at classifySqlState (sqlError.js:40:14) {",
  `    [cause]: Error: null value in column "chat_key" of relation "inbox" violates not-null constraint`,
  "        at classifyFields (PgConnection.js:1876:31)",
  "  }",
  "}"
].join("\n")

// Nothing listens on port 1: a command that tried the database would fail with exit code 1.
const UNREACHABLE = { DATABASE_URL: "postgres://postgres:s3cr3t-pw@127.0.0.1:1/steadfast" }

describe("ops CLI", { timeout: SLOW }, () => {
  it.live("stats counts inbox rows by status with the oldest pending update, dead letters and outbox rows by status", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* setup("stats")
      yield* insertUpdate(sql, { id: 20, status: "pending", receivedAgo: "5 minutes 3 seconds" })
      yield* insertUpdate(sql, { id: 21, status: "pending", attempts: 2, receivedAgo: "1 minute", availableIn: "1 minute" })
      yield* insertUpdate(sql, { id: 22, status: "processing", attempts: 1 })
      yield* insertUpdate(sql, { id: 23, status: "done" })
      yield* insertUpdate(sql, { id: 24, status: "done" })
      yield* insertUpdate(sql, { id: 25, status: "skipped" })
      yield* insertUpdate(sql, { id: 26, status: "dead", attempts: 5 })
      yield* insertUpdate(sql, { id: 27, status: "dead", attempts: 5 })
      yield* insertCall(sql, { updateId: 23, status: "sent" })
      yield* insertCall(sql, { updateId: 24, status: "sent" })
      yield* insertCall(sql, { updateId: 26, status: "failed" })
      yield* insertCall(sql, { updateId: 22, status: "pending" })

      const result = yield* runOps(["stats"], { DATABASE_URL: url })
      assertSuccess(result, url)
      assert.deepStrictEqual(lines(result.stdout).map((line) => line.replace(/ {2,}/g, "  ").replace(/\d+s ago/, "Ns ago")), [
        "inbox",
        "  pending  2  (1 waiting out a retry backoff)",
        "  processing  1",
        "  done  2",
        "  skipped  1",
        "  dead  2  (requeue with: npm run ops -- retry --all-dead)",
        "  discarded  0",
        "  total  8",
        "  oldest pending: update 20, received 5m Ns ago",
        "outbox",
        "  pending  1",
        "  sending  0",
        "  sent  2",
        "  failed  1",
        "  expired  0",
        "  discarded  0",
        "  total  4"
      ])
    }))

  it.live("show prints an update's status, kind, chat, attempts, times, last error, trace id, Bot API calls and raw update", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* setup("show")
      yield* insertUpdate(sql, {
        id: 31,
        status: "dead",
        chatId: 4242,
        attempts: 5,
        lastError: "Error: boom\n    at handler (bot.ts:1)",
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
        receivedAgo: "2 hours",
        finishedAgo: "1 hour"
      })
      yield* insertCall(sql, { updateId: 31, status: "failed" })

      const result = yield* runOps(["show", "31"], { DATABASE_URL: url })
      assertSuccess(result, url)
      const [head, raw] = result.stdout.split("raw update\n")
      assert.match(head ?? "", /^update 31\n {2}status {6}dead\n {2}kind {8}message\n {2}chat {8}chat:4242\n {2}attempts {4}5\n/)
      assert.match(head ?? "", /\n {2}received {4}\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(2h 0m ago\)\n/)
      assert.match(head ?? "", /\n {2}finished {4}\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n/)
      assert.include(head ?? "", "\n  error       Error: boom\n")
      assert.include(head ?? "", "\nlast error in full\n  Error: boom\n                  at handler (bot.ts:1)\n")
      assert.include(head ?? "", "\n  trace id    4bf92f3577b34da6a3ce929d0e0e4736\n")
      assert.match(
        head ?? "",
        /\nbot api calls\n {2}#\d+ sendMessage failed, 0 attempts, created [^\n]+\n {6}Bot API 403: Forbidden: bot was blocked by the user\n$/
      )
      assert.deepStrictEqual(JSON.parse(raw ?? ""), sampleUpdate({ updateId: 31, chatId: 4242, text: "/start" }))
    }))

  it.live("show and retry of an unknown update_id exit 2 with a one-line message", () =>
    Effect.gen(function*() {
      const { url } = yield* setup("unknown")
      for (const args of [["show", "999999"], ["retry", "999999"]]) {
        const result = yield* runOps(args, { DATABASE_URL: url })
        assert.strictEqual(result.code, 2, args.join(" "))
        assert.strictEqual(result.stdout, "")
        assert.deepStrictEqual(lines(result.stderr), [databaseLine(url), "ops: no update with update_id 999999"])
      }
    }))

  it.live("retry requeues a dead update (pending, 0 attempts, runnable now, last error kept) and NOTIFYs 'steadfast' with 'inbox'", () =>
    Effect.gen(function*() {
      const { pg, probe, sql, url } = yield* setup("retry")
      yield* insertUpdate(sql, { id: 41, status: "dead", attempts: 5, lastError: "Error: boom", finishedAgo: "1 hour" })
      const notifications = yield* pg.listen("steadfast")

      const result = yield* runOps(["retry", "41"], { DATABASE_URL: url })
      assertSuccess(result, url)
      assert.strictEqual(result.stdout, "requeued 1 dead update: 41\n")
      const notification = yield* Queue.take(notifications).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(notification.payload, "inbox")
      assert.deepStrictEqual(
        yield* inboxRow(probe, 41),
        Option.some({ status: "pending", attempts: 0, last_error: "Error: boom", finished: false, runnable: true })
      )
    }))

  it.live("retry of an update that is not dead exits 2, says so and changes nothing", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("retry_not_dead")
      yield* insertUpdate(sql, { id: 51, status: "done", attempts: 1 })
      yield* insertUpdate(sql, { id: 52, status: "pending", attempts: 2, lastError: "Error: flaky", availableIn: "1 minute" })
      const before = [yield* inboxRow(probe, 51), yield* inboxRow(probe, 52)]

      const done = yield* runOps(["retry", "51"], { DATABASE_URL: url })
      assert.strictEqual(done.code, 2)
      assert.strictEqual(done.stdout, "")
      assert.deepStrictEqual(lines(done.stderr), [databaseLine(url), "ops: update 51 is done, not dead: nothing changed"])
      const pending = yield* runOps(["retry", "52"], { DATABASE_URL: url })
      assert.strictEqual(pending.code, 2)
      assert.deepStrictEqual(lines(pending.stderr), [databaseLine(url), "ops: update 52 is pending, not dead: nothing changed"])

      assert.deepStrictEqual([yield* inboxRow(probe, 51), yield* inboxRow(probe, 52)], before)
    }))

  it.live("retry --all-dead requeues every dead update and names them; run again it changes nothing", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("retry_all")
      yield* insertUpdate(sql, { id: 1_000_000_003, status: "dead", attempts: 5 })
      yield* insertUpdate(sql, { id: 61, status: "dead", attempts: 5 })
      yield* insertUpdate(sql, { id: 9, status: "dead", attempts: 3 })
      yield* insertUpdate(sql, { id: 62, status: "done", attempts: 1 })
      // A later update of 63's chat is being handled right now.
      yield* insertUpdate(sql, { id: 63, status: "dead", chatId: 6300, attempts: 5 })
      yield* insertUpdate(sql, { id: 64, status: "processing", chatId: 6300, attempts: 1 })

      // Nothing runs them here (no service): --wait 0s reports the requeue alone.
      const first = yield* runOps(["retry", "--all-dead", "--wait", "0s"], { DATABASE_URL: url })
      assertSuccess(first, url)
      assert.strictEqual(first.stdout, "requeued 4 dead updates: 9, 61, 63, 1000000003\n")
      const rows = yield* probe.rows(
        Schema.Struct({ id: Schema.Number, status: Schema.String, runnable: Schema.Boolean }),
        "SELECT update_id::int AS id, status, available_at <= now() AS runnable FROM inbox ORDER BY update_id"
      )
      assert.deepStrictEqual(rows.map((row) => [row.id, row.status, row.runnable]), [
        [9, "pending", true],
        [61, "pending", true],
        [62, "done", true],
        // Runnable once 64's lease is over, so the chat never has two updates running at once.
        [63, "pending", false],
        [64, "processing", true],
        [1_000_000_003, "pending", true]
      ])
      const [deferred] = yield* probe.rows(
        Schema.Struct({ same: Schema.Boolean }),
        "SELECT a.available_at = b.locked_until AS same FROM inbox a, inbox b WHERE a.update_id = 63 AND b.update_id = 64"
      )
      assert.strictEqual(deferred?.same, true)

      const second = yield* runOps(["retry", "--all-dead"], { DATABASE_URL: url })
      assertSuccess(second, url)
      assert.strictEqual(second.stdout, "no dead updates: nothing changed\n")
    }))

  it.live("a running service answers an update as soon as retry requeues it", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("retry_service")
      const app = yield* Layer.build(testAppLayer({ databaseUrl: url }))
      const standIn = Context.get(app, BotApiRecorder)
      yield* insertUpdate(sql, { id: 71, status: "dead", chatId: 777_071, attempts: 5, lastError: "Error: boom" })
      // Dead means never claimed again: nothing is sent until the operator retries.
      yield* Effect.sleep("1500 millis")
      assert.deepStrictEqual((yield* standIn.calls).filter((call) => call.method === "sendMessage"), [])

      const result = yield* runOps(["retry", "71"], { DATABASE_URL: url })
      assertSuccess(result, url)
      yield* standIn.awaitCalls(
        (calls) => calls.some((call) => call.method === "sendMessage" && call.params["chat_id"] === 777_071),
        "15 seconds"
      )
      const row = yield* eventually("update 71 done", inboxRow(probe, 71), (row) => Option.isSome(row) && row.value.status === "done", {
        timeout: "20 seconds"
      })
      assert.deepStrictEqual(Option.map(row, (row) => [row.status, row.attempts, row.last_error]), Option.some(["done", 1, null]))
    }))

  it.live("purge deletes finished rows older than --older-than; dead updates only with --include-dead, below 1d only with --force", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("purge")
      yield* insertUpdate(sql, { id: 81, status: "done", finishedAgo: "8 days" })
      yield* insertUpdate(sql, { id: 82, status: "done", finishedAgo: "30 days" })
      yield* insertUpdate(sql, { id: 83, status: "skipped", finishedAgo: "8 days" })
      yield* insertUpdate(sql, { id: 84, status: "dead", finishedAgo: "8 days" })
      yield* insertUpdate(sql, { id: 85, status: "done", finishedAgo: "2 days" })
      yield* insertUpdate(sql, { id: 86, status: "pending", receivedAgo: "20 days" })
      yield* insertUpdate(sql, { id: 87, status: "processing", receivedAgo: "20 days" })
      yield* insertCall(sql, { updateId: 81, status: "sent", ago: "8 days" })
      yield* insertCall(sql, { updateId: 84, status: "failed", ago: "8 days" })
      yield* insertCall(sql, { updateId: 85, status: "sent", ago: "2 days" })
      yield* insertCall(sql, { updateId: 86, status: "pending", ago: "20 days" })

      const week = yield* runOps(["purge", "--older-than", "7d"], { DATABASE_URL: url })
      assertSuccess(week, url)
      assert.strictEqual(
        week.stdout,
        "purged 3 inbox updates finished more than 7d ago (done 2, skipped 1, dead 0)\n" +
          "purged 2 outbox calls older than 7d (sent 1, failed 1)\n" +
          "dead updates were kept (add --include-dead to purge them too)\n"
      )
      assert.deepStrictEqual(yield* inboxIds(probe), [84, 85, 86, 87])

      const withDead = yield* runOps(["purge", "--older-than", "12h", "--include-dead", "--force"], { DATABASE_URL: url })
      assertSuccess(withDead, url)
      assert.strictEqual(
        withDead.stdout,
        "purged 2 inbox updates finished more than 12h ago (done 1, skipped 0, dead 1)\n" +
          "purged 1 outbox call older than 12h (sent 1, failed 0)\n"
      )
      assert.deepStrictEqual(yield* inboxIds(probe), [86, 87])
      const outbox = yield* probe.rows(Schema.Struct({ status: Schema.String }), "SELECT status FROM outbox")
      assert.deepStrictEqual(outbox.map((row) => row.status), ["pending"])
    }))

  // The commands an operator mistypes most; each is a process start, so the list stays short.
  const badArguments: ReadonlyArray<readonly [ReadonlyArray<string>, string, string]> = [
    [["bogus"], `ops: Unknown subcommand "bogus" for "ops"`, "usage: ops <subcommand> [flags]"],
    [["show"], "ops: give either an update_id or --call <id>", "usage: ops show [flags] [<update_id>]"],
    [
      ["retry", "abc"],
      `ops: Invalid value for argument <update_id>: "abc". Expected: an update_id (a whole number)`,
      "usage: ops retry [flags] [<update_id>]"
    ],
    [
      ["retry", "5", "--all-dead"],
      "ops: give one of: an update_id, --all-dead, --call <id>, --all-expired",
      "usage: ops retry [flags] [<update_id>]"
    ],
    [
      ["purge", "--older-than", "7x"],
      `ops: Invalid value for flag --older-than: "7x". Expected: a duration such as 7d, 12h or 30m`,
      "usage: ops purge [flags]"
    ],
    [
      ["purge", "--older-than", "12h"],
      "ops: --older-than below 1d needs --force: a redelivered update whose row is gone would be handled again",
      "usage: ops purge [flags]"
    ]
  ]

  it.live("bad arguments exit 2 with a one-line message and the usage, without touching the database", () =>
    Effect.forEach(badArguments, ([args, message, usage]) =>
      Effect.map(runOps(args, UNREACHABLE), (result) => {
        const what = `ops ${args.join(" ")}`
        assert.strictEqual(result.code, 2, what)
        assert.strictEqual(result.stdout, "", what)
        const [first, second, ...rest] = lines(result.stderr)
        assert.strictEqual(first, message, what)
        assert.strictEqual(second?.startsWith(`${usage}   (`), true, `${what}: ${second}`)
        assert.deepStrictEqual(rest, [], what)
      }), { concurrency: 2, discard: true }))

  it.live("no command prints the help on stderr and exits 2; --help prints it on stdout and exits 0", () =>
    Effect.gen(function*() {
      const none = yield* runOps([], UNREACHABLE)
      assert.strictEqual(none.code, 2)
      assert.strictEqual(none.stdout, "")
      assert.include(none.stderr, "USAGE\n  ops <subcommand> [flags]")
      const help = yield* runOps(["--help"], UNREACHABLE)
      assert.strictEqual(help.code, 0)
      assert.strictEqual(help.stderr, "")
      for (const command of ["stats", "list", "show", "retry", "discard", "purge"]) {
        assert.match(help.stdout, new RegExp(`\\n  ${command} `))
      }
    }))

  it.live("an unreachable database exits 1 with a one-line error that does not show the password", () =>
    Effect.gen(function*() {
      const result = yield* runOps(["stats"], UNREACHABLE)
      assert.strictEqual(result.code, 1)
      assert.strictEqual(result.stdout, "")
      const [target, error, ...rest] = lines(result.stderr)
      assert.strictEqual(target, "ops: database: postgres://postgres@127.0.0.1:1/steadfast")
      assert.match(error ?? "", /^ops: database error \(ConnectionError\): .*ECONNREFUSED/)
      assert.deepStrictEqual(rest, [])
      assert.notInclude(result.stderr, "s3cr3t-pw")
    }))

  it.live("a DATABASE_URL that is not a postgres URL exits 1 and is not echoed", () =>
    Effect.gen(function*() {
      const result = yield* runOps(["stats"], { DATABASE_URL: "mysql://root:s3cr3t-pw@db/app" })
      assert.strictEqual(result.code, 1)
      assert.deepStrictEqual(lines(result.stderr), ["ops: DATABASE_URL: must be a postgres:// or postgresql:// URL, or embedded"])
    }))

  it.live("without DATABASE_URL it uses the embedded PostgreSQL a sandbox service is running under .data/", () =>
    Effect.gen(function*() {
      const dir = yield* scratchDir
      const server = yield* Layer.build(EmbeddedDatabase.layer(join(dir, ".data/postgres")))
      const { probe, sql } = yield* setup("embedded_running", Redacted.value(Context.get(server, EmbeddedDatabase).url))
      yield* insertUpdate(sql, { id: 91, status: "dead", attempts: 5 })

      const result = yield* runOps(["retry", "91"], {}, { cwd: dir })
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(result.stdout, "requeued 1 dead update: 91\n")
      assert.deepStrictEqual(lines(result.stderr), ["ops: database: embedded PostgreSQL in .data/postgres (DATABASE_URL is not set)"])
      assert.deepStrictEqual(Option.map(yield* inboxRow(probe, 91), (row) => row.status), Option.some("pending"))
    }))

  it.live("without DATABASE_URL and no server running, it starts the embedded PostgreSQL under .data/ and stops it again", () =>
    Effect.gen(function*() {
      const dir = yield* scratchDir
      // purge changes rows, so it brings the new database's schema up first.
      const result = yield* runOps(["purge", "--older-than", "7d"], {}, { cwd: dir })
      assert.strictEqual(result.code, 0, result.stderr)
      assert.match(result.stdout, /^purged 0 inbox updates /)
      assert.isTrue(existsSync(join(dir, ".data/postgres/PG_VERSION")), "the data directory was created")
      assert.isFalse(existsSync(join(dir, ".data/postgres/postmaster.pid")), "the server was stopped")
    }))
  it.live("list filters updates by status, kind, chat and age, newest first, each with its innermost error; --json gives the rows", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* setup("list")
      yield* insertUpdate(sql, { id: 111, status: "dead", chatId: 1100, attempts: 5, lastError: PG_ERROR, receivedAgo: "3 hours" })
      yield* insertUpdate(sql, { id: 112, status: "dead", chatId: 1100, attempts: 5, lastError: "Error: boom", receivedAgo: "10 minutes" })
      yield* insertUpdate(sql, { id: 113, status: "done", chatId: 1100, receivedAgo: "3 hours" })
      yield* insertUpdate(sql, { id: 114, status: "dead", chatId: 1101, attempts: 5, receivedAgo: "3 hours" })
      yield* insertCall(sql, { updateId: 113, status: "failed" })

      const dead = yield* runOps(["list", "--status", "dead", "--chat", "1100"], { DATABASE_URL: url })
      assertSuccess(dead, url)
      const [newest, oldest, ...more] = lines(dead.stdout)
      assert.match(newest ?? "", /^112 +dead +message +chat:1100 +5 attempts +10m \d+s ago +Error: boom$/)
      // The innermost message: PostgreSQL's, not the driver's "Query failed".
      assert.match(oldest ?? "", /^111 +dead +message +chat:1100 +5 attempts +3h 0m ago +Error: null value in column "chat_key"/)
      assert.deepStrictEqual(more, [])
      const old = yield* runOps(["list", "--status", "dead", "--older-than", "1h", "--kind", "message", "--json"], { DATABASE_URL: url })
      assertSuccess(old, url)
      const rows = JSON.parse(old.stdout) as ReadonlyArray<{ update_id: string; chat_key: string; last_error: string | null }>
      assert.deepStrictEqual(rows.map((row) => [row.update_id, row.chat_key, row.last_error]), [
        ["114", "chat:1101", null],
        ["111", "chat:1100", PG_ERROR]
      ])
      const calls = yield* runOps(["list", "--calls", "--status", "failed"], { DATABASE_URL: url })
      assertSuccess(calls, url)
      assert.match(
        calls.stdout,
        /^#\d+ +failed +sendMessage +chat:1 +0 attempts +\d+m \d+s ago +Bot API 403: Forbidden: bot was blocked by the user\n$/
      )
    }))

  it.live("show puts PostgreSQL's message first and lists the error history; --json carries all of it", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* setup("show_history")
      yield* insertUpdate(sql, { id: 121, status: "pending", chatId: 1200 })
      // Failures as the dispatcher records them: the same error twice, then another one.
      for (const [attempts, error] of [[1, PG_ERROR], [2, PG_ERROR], [3, "Error: boom"]] as const) {
        yield* sql`UPDATE inbox SET attempts = ${attempts}, last_error = ${error} WHERE update_id = 121`
      }
      yield* sql`UPDATE inbox SET status = 'dead', finished_at = now() WHERE update_id = 121`

      const text = yield* runOps(["show", "121"], { DATABASE_URL: url })
      assertSuccess(text, url)
      assert.include(text.stdout, "\n  error       Error: boom\n")
      assert.match(
        text.stdout,
        /\nerror history\n {2}attempts 1-2, 2× from \S+ to \S+: Error: null value in column "chat_key" of relation "inbox" violates not-null constraint {2}\(via effect\/sql\/SqlError\/ConstraintError: PgConnection: Query failed ← effect\/sql\/SqlError: PgConnection: Query failed\)\n {2}attempt 3, \S+: Error: boom\nlast error in full\n/
      )
      const json = yield* runOps(["show", "121", "--json"], { DATABASE_URL: url })
      assertSuccess(json, url)
      const details = JSON.parse(json.stdout) as {
        status: string
        history: ReadonlyArray<{ error: string; first_attempt: number; last_attempt: number; times: number }>
      }
      assert.strictEqual(details.status, "dead")
      assert.deepStrictEqual(details.history.map((entry) => [entry.error, entry.first_attempt, entry.last_attempt, entry.times]), [
        [PG_ERROR, 1, 2, 2],
        ["Error: boom", 3, 3, 1]
      ])
    }))

  it.live("discard gives up on a dead update: the row stays, no longer open or dead, and a redelivery of it is still ignored", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("discard")
      const app = yield* Layer.build(testAppLayer({ databaseUrl: url }))
      const base = yield* Effect.provideContext(baseUrl, app)
      yield* insertUpdate(sql, { id: 131, status: "dead", chatId: 777_131, attempts: 5, lastError: "Error: malformed" })
      yield* insertUpdate(sql, { id: 132, status: "done", chatId: 777_131 })

      const result = yield* runOps(["discard", "131"], { DATABASE_URL: url })
      assertSuccess(result, url)
      assert.strictEqual(result.stdout, "discarded update 131: it will not run again, and a redelivery of it is still ignored\n")
      const notDead = yield* runOps(["discard", "132"], { DATABASE_URL: url })
      assert.strictEqual(notDead.code, 2)
      assert.deepStrictEqual(lines(notDead.stderr), [databaseLine(url), "ops: update 132 is done, not dead: nothing changed"])

      // Telegram redelivers it: stored already, so answered 200 and left as it is.
      const redelivered = yield* postUpdate(base, sampleUpdate({ updateId: 131, chatId: 777_131, text: "/start" }))
      assert.strictEqual(redelivered.status, 200)
      assert.deepStrictEqual(
        Option.map(yield* inboxRow(probe, 131), (row) => [row.status, row.last_error]),
        Option.some(["discarded", "Error: malformed"])
      )
      const stats = yield* runOps(["stats"], { DATABASE_URL: url })
      assert.match(stats.stdout, /\n {2}dead +0\n {2}discarded +1\n/)
    }))

  it.live("retry --all-dead with a service running reports which updates were done and which died again", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* setup("retry_died_again")
      yield* sql.unsafe(MARKS_TABLE_DDL)
      const probe = yield* makeProbe
      yield* Layer.build(testAppLayer({ databaseUrl: url, env: { MAX_ATTEMPTS: "1" }, handlers: faultyThenShipped(probe, "app") }))
      yield* insertUpdate(sql, { id: 141, status: "dead", chatId: 777_141, attempts: 1, text: "/fail" })
      yield* insertUpdate(sql, { id: 142, status: "dead", chatId: 777_142, attempts: 1, text: "/start" })

      const result = yield* runOps(["retry", "--all-dead", "--wait", "60s"], { DATABASE_URL: url })
      assertSuccess(result, url)
      assert.deepStrictEqual(lines(result.stdout), [
        "requeued 2 dead updates: 141, 142",
        "done: 142",
        "died again: 141 (see: npm run ops -- show <update_id>; dismiss: npm run ops -- discard <update_id>)"
      ])
    }))

  it.live("retry --call and --all-expired requeue failed and expired calls; discard --call dismisses one; others are left alone", () =>
    Effect.gen(function*() {
      const { probe, sql, url } = yield* setup("calls")
      yield* insertUpdate(sql, { id: 151, status: "done" })
      for (const status of ["failed", "expired", "expired", "sent"]) yield* insertCall(sql, { updateId: 151, status, ago: "2 days" })
      const ids = (yield* probe.rows(Schema.Struct({ id: Schema.String }), "SELECT id::text AS id FROM outbox ORDER BY id")).map((row) =>
        row.id
      )
      const callRows = probe.rows(
        Schema.Struct({ status: Schema.String, attempts: Schema.Number, runnable: Schema.Boolean, fresh: Schema.Boolean }),
        `SELECT status, attempts, available_at <= now() AS runnable, created_at > now() - interval '1 minute' AS fresh
         FROM outbox ORDER BY id`
      )

      const one = yield* runOps(["retry", "--call", ids[0]!], { DATABASE_URL: url })
      assertSuccess(one, url)
      assert.strictEqual(one.stdout, `requeued call ${ids[0]}\n`)
      const discarded = yield* runOps(["discard", "--call", ids[1]!], { DATABASE_URL: url })
      assertSuccess(discarded, url)
      const all = yield* runOps(["retry", "--all-expired"], { DATABASE_URL: url })
      assertSuccess(all, url)
      assert.strictEqual(all.stdout, `requeued 1 expired call: ${ids[2]}\n`)
      const sent = yield* runOps(["retry", "--call", ids[3]!], { DATABASE_URL: url })
      assert.strictEqual(sent.code, 2)
      assert.deepStrictEqual(lines(sent.stderr), [databaseLine(url), `ops: call ${ids[3]} is sent, not failed or expired: nothing changed`])

      // Requeued calls start over: runnable now, no attempts used, and a fresh age for OUTBOX_MAX_AGE.
      assert.deepStrictEqual((yield* callRows).map((row) => [row.status, row.attempts, row.runnable, row.fresh]), [
        ["pending", 0, true, true],
        ["discarded", 0, true, false],
        ["pending", 0, true, true],
        ["sent", 0, true, false]
      ])
    }))

  // Each command finding no tables also shows that the one before it did not create them.
  it.live("commands that only look never migrate, and no command prints the URL's query parameters", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("ops_no_migrate"))
      for (const args of [["stats"], ["list"], ["show", "1"]]) {
        const result = yield* runOps(args, { DATABASE_URL: url })
        assert.strictEqual(result.code, 1, args.join(" "))
        assert.include(result.stderr, "ops: the database has no steadfast tables yet")
      }
      const withQuery = "postgres://postgres@127.0.0.1:1/steadfast?sslmode=disable&password=s3cr3t-query"
      const result = yield* runOps(["list"], { DATABASE_URL: withQuery })
      assert.strictEqual(result.code, 1)
      assert.strictEqual(lines(result.stderr)[0], "ops: database: postgres://postgres@127.0.0.1:1/steadfast")
      assert.notInclude(result.stderr + result.stdout, "s3cr3t-query")
    }))
})
