import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Duration, Effect, Layer, Logger, Option, Redacted, Schema } from "effect"
import { Database } from "../../src/db/Database.ts"
import { parsePeriod } from "../../src/Config.ts"
import { Retention } from "../../src/queue/Retention.ts"
import { freshDatabase, type PgProbe, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

/** A fresh, migrated database: the app's client (what the sweep runs on), and the kit's probe for looking. */
const database = (label: string) =>
  Effect.gen(function*() {
    const url = yield* Effect.promise(() => freshDatabase(label))
    const context = yield* Layer.build(Database.layerUrl(Redacted.make(url), 4))
    return { db: Context.get(context, Database), probe: yield* pgProbe(url) }
  })

interface Row {
  readonly id: number
  readonly status: string
  /** Finished (or, for open rows, received) this long ago. */
  readonly ago: string
}

const seed = Effect.fn(function*(db: Database["Service"], inbox: ReadonlyArray<Row>, outbox: ReadonlyArray<Row>) {
  const sql = db.sql
  for (const row of inbox) {
    const open = row.status === "pending" || row.status === "processing"
    yield* sql`
      INSERT INTO inbox (update_id, chat_key, kind, payload, status, received_at, finished_at, locked_until)
      VALUES (${row.id}, ${`chat:${row.id}`}, 'message', ${JSON.stringify({ update_id: row.id })}::jsonb, ${row.status},
              now() - ${row.ago}::interval, ${open ? null : sql`now() - ${row.ago}::interval`},
              ${row.status === "processing" ? sql`now() + interval '1 minute'` : null})`
  }
  for (const row of outbox) {
    yield* sql`
      INSERT INTO outbox (id, chat_key, method, payload, status, created_at, available_at, sent_at)
      VALUES (${row.id}, ${`chat:${row.id}`}, 'sendMessage', '{}'::jsonb, ${row.status}, now() - ${row.ago}::interval,
              now() - ${row.ago}::interval, ${row.status === "sent" ? sql`now() - ${row.ago}::interval` : null})`
  }
})

const ids = (probe: PgProbe, table: "inbox" | "outbox") =>
  Effect.map(
    probe.rows(
      Schema.Struct({ id: Schema.Number }),
      table === "inbox" ? "SELECT update_id::int AS id FROM inbox ORDER BY update_id" : "SELECT id::int AS id FROM outbox ORDER BY id"
    ),
    (rows) => rows.map((row) => row.id)
  )

const range = (from: number, count: number, status: string, ago: string): ReadonlyArray<Row> =>
  Array.from({ length: count }, (_, i) => ({ id: from + i, status, ago }))

// Old finished rows, recent finished rows, and rows that are never removed.
const INBOX: ReadonlyArray<Row> = [
  ...range(100, 7, "done", "8 days"),
  ...range(200, 3, "skipped", "9 days"),
  ...range(300, 2, "dead", "30 days"),
  ...range(400, 2, "done", "6 days"),
  ...range(500, 1, "skipped", "1 hour"),
  ...range(600, 1, "pending", "20 days"),
  ...range(700, 1, "processing", "20 days")
]
const OUTBOX: ReadonlyArray<Row> = [
  ...range(100, 4, "sent", "8 days"),
  ...range(200, 2, "failed", "10 days"),
  ...range(300, 1, "sent", "1 day"),
  ...range(400, 1, "pending", "20 days"),
  ...range(500, 1, "sending", "20 days")
]
const KEPT_INBOX = [300, 301, 400, 401, 500, 600, 700]
const KEPT_OUTBOX = [300, 400, 500]

describe("Retention", () => {
  it.live("a sweep deletes done/skipped updates and sent/failed calls older than the period in batches; recent, open and dead rows stay", () =>
    Effect.gen(function*() {
      const { db, probe } = yield* database("retention_sweep")
      yield* seed(db, INBOX, OUTBOX)

      const result = yield* Retention.sweep({ olderThan: Duration.days(7), batchSize: 3, includeDead: false }).pipe(
        Effect.provideService(Database, db)
      )
      assert.deepStrictEqual(result.inbox, { done: 7, skipped: 3, dead: 0 })
      assert.deepStrictEqual(result.outbox, { sent: 4, failed: 2 })
      // 10 inbox rows in batches of 3 (3, 3, 3, 1) and 6 outbox rows (3, 3, then an empty batch).
      assert.strictEqual(result.batches, 7)
      assert.deepStrictEqual(yield* ids(probe, "inbox"), KEPT_INBOX)
      assert.deepStrictEqual(yield* ids(probe, "outbox"), KEPT_OUTBOX)

      const again = yield* Retention.sweep({ olderThan: Duration.days(7), batchSize: 3, includeDead: false }).pipe(
        Effect.provideService(Database, db)
      )
      assert.deepStrictEqual(again, { inbox: { done: 0, skipped: 0, dead: 0 }, outbox: { sent: 0, failed: 0 }, batches: 2 })
    }))

  it.live("with includeDead a sweep also deletes old dead updates", () =>
    Effect.gen(function*() {
      const { db, probe } = yield* database("retention_dead")
      yield* seed(db, INBOX, OUTBOX)
      const result = yield* Retention.sweep({ olderThan: Duration.days(7), batchSize: 500, includeDead: true }).pipe(
        Effect.provideService(Database, db)
      )
      assert.deepStrictEqual(result.inbox, { done: 7, skipped: 3, dead: 2 })
      assert.deepStrictEqual(yield* ids(probe, "inbox"), [400, 401, 500, 600, 700])
    }))

  it.live("the layer sweeps at start-up, logs what it removed, and keeps recent, open and dead rows", () =>
    Effect.gen(function*() {
      const { db, probe } = yield* database("retention_layer")
      yield* seed(db, INBOX, OUTBOX)
      const logs: Array<string> = []
      const capture = Logger.layer([Logger.make((options) => void logs.push(`${options.logLevel}: ${String(options.message)}`))])

      yield* Layer.build(
        Retention.layer({ retention: Duration.days(7), interval: Duration.hours(1), batchSize: 2 }).pipe(
          Layer.provide(Layer.succeed(Database, db)),
          Layer.provide(capture)
        )
      )
      yield* eventually("the old outbox rows swept", ids(probe, "outbox"), (rows) => rows.length === KEPT_OUTBOX.length, {
        timeout: "10 seconds"
      })
      assert.deepStrictEqual(yield* ids(probe, "inbox"), KEPT_INBOX)
      const line = yield* eventually(
        "the sweep's log line",
        Effect.sync(() => logs.find((line) => line.includes("retention: removed"))),
        (line) => line !== undefined,
        { timeout: "10 seconds" }
      )
      assert.match(
        line ?? "",
        /^Info: retention: removed 10 inbox rows \(done 7, skipped 3\) and 6 outbox rows \(sent 4, failed 2\) older than 7d in 10 batches/
      )
    }))

  it.live("a failed sweep is logged and the loop carries on at the next interval", () =>
    Effect.gen(function*() {
      const { db, probe } = yield* database("retention_failure")
      yield* seed(db, INBOX, OUTBOX)
      // Without its table the outbox half of every sweep fails.
      yield* db.sql`ALTER TABLE outbox RENAME TO outbox_away`
      const logs: Array<string> = []
      const capture = Logger.layer([Logger.make((options) => void logs.push(`${options.logLevel}: ${String(options.message)}`))])

      yield* Layer.build(
        Retention.layer({ retention: Duration.days(7), interval: Duration.millis(200), batchSize: 100 }).pipe(
          Layer.provide(Layer.succeed(Database, db)),
          Layer.provide(capture)
        )
      )
      // Logged once (later failures are counted, at most one line per interval), and the loop goes on.
      yield* eventually(
        "a failed sweep logged",
        Effect.sync(() => logs.filter((line) => line.startsWith("Warn: retention sweep failed")).length),
        (n) => n >= 1,
        { timeout: "10 seconds" }
      )
      yield* db.sql`ALTER TABLE outbox_away RENAME TO outbox`
      yield* eventually("the old outbox rows swept", ids(probe, "outbox"), (rows) => rows.length === KEPT_OUTBOX.length, {
        timeout: "10 seconds"
      })
      yield* eventually(
        "the recovery logged",
        Effect.sync(() => logs.some((line) => line.startsWith("Info: retention sweep failed") && line.includes("recovered"))),
        (seen) => seen,
        { timeout: "10 seconds" }
      )
      assert.deepStrictEqual(yield* ids(probe, "inbox"), KEPT_INBOX)
    }))

  it.live("layerConfig takes the period from INBOX_RETENTION and refuses one it cannot read or one below a day", () =>
    Effect.gen(function*() {
      const { db, probe } = yield* database("retention_config")
      yield* seed(db, [{ id: 800, status: "done", ago: "12 days" }, { id: 801, status: "done", ago: "8 days" }], [])
      const withEnv = (env: Record<string, string>) =>
        Retention.layerConfig.pipe(
          Layer.provide(Layer.succeed(Database, db)),
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
        )

      yield* Layer.build(withEnv({ INBOX_RETENTION: "10d" }))
      yield* eventually("the old inbox rows swept", ids(probe, "inbox"), (rows) => rows.length === 1, { timeout: "10 seconds" })
      assert.deepStrictEqual(yield* ids(probe, "inbox"), [801])

      const unreadable = yield* Effect.flip(Layer.build(withEnv({ INBOX_RETENTION: "ten days" })))
      assert.strictEqual(unreadable.message, `INBOX_RETENTION: must be a number and s, m, h, d or w (7d, 36h, 2w), got "ten days"`)
      const tooShort = yield* Effect.flip(Layer.build(withEnv({ INBOX_RETENTION: "12h" })))
      assert.match(tooShort.message, /^INBOX_RETENTION: must be at least 1d/)
    }))

  it("parsePeriod reads a number and a unit s, m, h, d or w, and nothing else", () => {
    const millis = (text: string) => Option.map(parsePeriod(text), Duration.toMillis)
    assert.deepStrictEqual(millis("7d"), Option.some(7 * 86_400_000))
    assert.deepStrictEqual(millis("12h"), Option.some(12 * 3_600_000))
    assert.deepStrictEqual(millis("30m"), Option.some(30 * 60_000))
    assert.deepStrictEqual(millis("45s"), Option.some(45_000))
    assert.deepStrictEqual(millis("2w"), Option.some(14 * 86_400_000))
    for (const bad of ["", "7", "d", "7x", "-1d", "1.5h", "7 d", "7dd", "1y"]) {
      assert.isTrue(Option.isNone(parsePeriod(bad)), `"${bad}" is rejected`)
    }
  })
})
