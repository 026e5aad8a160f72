import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Schema } from "effect"
import { connect } from "node:net"
import { fallbackReply } from "../../src/bot/handlers/Basics.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_SECRET, testEnv } from "../support/TestApp.ts"
import { postUpdate, rawRequest, singleSocketAgent } from "../support/TestHttp.ts"
import { eventually } from "../support/Eventually.ts"
import { freshDatabase, holdTransaction, inboxRow, type PgProbe, pgProbe } from "../support/TestDatabase.ts"

const webhookHeaders = { "content-type": "application/json", "x-telegram-bot-api-secret-token": TEST_SECRET }

const sentMessages = (calls: ReadonlyArray<RecordedCall>) =>
  calls.filter((call) => call.method === "sendMessage").map((call) => `${String(call.params["chat_id"])}:${String(call.params["text"])}`)

/**
 * Holds an uncommitted inbox row for `updateId` in a transaction of our own. The service's
 * `INSERT … ON CONFLICT DO NOTHING` for that id then waits for us: a webhook request that is
 * reliably in flight for as long as we like. Rolling back lets the service's insert through.
 */
const holdInboxRow = (url: string, updateId: number) =>
  Effect.tap(
    holdTransaction(url),
    (held) => held.query("INSERT INTO inbox (update_id, chat_key, kind, payload) VALUES ($1, 'chat:held', 'message', '{}')", [updateId])
  )

/** Waits until `count` of the service's statements (those like `statement`) wait on a lock: a row the test holds. */
const awaitLockedStatements = (db: PgProbe, count: number, statement = "%") =>
  eventually(
    `${count} of the service's statements waiting on a lock`,
    db.rows(
      Schema.Struct({ n: Schema.Number }),
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE application_name = 'steadfast' AND datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE $1`,
      [statement]
    ),
    (rows) => (rows[0]?.n ?? 0) >= count,
    { timeout: "30 seconds" }
  )

/** Waits until the service's inbox insert is blocked on our held row. */
const awaitBlockedInsert = (db: PgProbe) => awaitLockedStatements(db, 1, "%steadfast_store%")

/** Waits until nothing accepts connections on `port` any more: the server has closed. */
const awaitClosedPort = (port: number) =>
  eventually(
    `port ${port} closed`,
    Effect.callback<boolean>((resume) => {
      const socket = connect({ host: "127.0.0.1", port })
      socket.once("connect", () => {
        socket.destroy()
        resume(Effect.succeed(false))
      })
      socket.once("error", () => resume(Effect.succeed(true)))
    }),
    (closed) => closed,
    { timeout: "20 seconds" }
  )

const waitForEmptyOutbox = (db: PgProbe) =>
  eventually(
    "an empty outbox queue",
    db.rows(Schema.Struct({ n: Schema.Number }), `SELECT count(*)::int AS n FROM outbox WHERE status IN ('pending', 'sending')`),
    (rows) => rows[0]?.n === 0,
    { timeout: "30 seconds" }
  )

const Status = Schema.Struct({ status: Schema.String, n: Schema.Number })
const statusCounts = (db: PgProbe, table: "inbox" | "outbox") =>
  Effect.map(
    db.rows(Status, `SELECT status, count(*)::int AS n FROM ${table} GROUP BY status ORDER BY status`),
    (rows) => Object.fromEntries(rows.map((row) => [row.status, row.n]))
  )

describe("shutdown", () => {
  it.live("SIGTERM with a webhook request and reply deliveries in flight: the request is answered 200, a later request on its keep-alive connection gets 503 with Retry-After, the process exits 0 and leaves nothing half-done", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("shutdown_inflight"))
      const db = yield* pgProbe(url)
      const standIn = yield* BotApiRecorder
      // Each delivery takes seconds, so the Sender is mid-call when the signal comes.
      yield* standIn.setDelay(3_000)
      const service = yield* spawnService(testEnv(url, standIn.url, { SHUTDOWN_GRACE_MS: "15000" }), { startTimeout: "50 seconds" })
      const webhook = `${service.baseUrl}/webhook`

      // A webhook request that is in flight at the signal, on a keep-alive connection.
      const agent = yield* singleSocketAgent
      const held = yield* holdInboxRow(url, 999)
      const inFlightUpdate = sampleUpdate({ updateId: 999, chatId: 3999, text: "in flight" })
      const inFlight = yield* rawRequest({ url: webhook, headers: webhookHeaders, chunks: [JSON.stringify(inFlightUpdate)], agent }).pipe(
        Effect.forkScoped
      )
      yield* awaitBlockedInsert(db)

      // Three chats with two updates each: a chat's second reply waits for its first.
      const updates = [1, 2, 3].flatMap((chat) =>
        [1, 2].map((n) => sampleUpdate({ updateId: 100 + chat * 10 + n, chatId: 3000 + chat, text: `chat ${chat} message ${n}` }))
      )
      for (const update of updates) {
        const answer = yield* rawRequest({ url: webhook, headers: webhookHeaders, chunks: [JSON.stringify(update)] })
        assert.strictEqual(answer.status, 200)
      }
      // A delivery has reached the Bot API and waits for its answer: signal now.
      const inDelivery = sentMessages(yield* standIn.awaitCalls((calls) => sentMessages(calls).length >= 1, "20 seconds"))[0]!
      yield* service.kill("SIGTERM")
      // The listener closes once the signal is handled (draining is set in the same signal
      // event): only then is the insert let through, so the request is surely in flight across it.
      yield* awaitClosedPort(Number(new URL(service.baseUrl).port))
      yield* held.rollback

      const answered = yield* Fiber.join(inFlight)
      assert.strictEqual(answered.status, 200, answered.body)
      const refused = yield* rawRequest({
        url: webhook,
        headers: webhookHeaders,
        chunks: [JSON.stringify(sampleUpdate({ updateId: 1000, chatId: 3999 }))],
        agent
      })
      assert.strictEqual(refused.status, 503, refused.body)
      assert.match(String(refused.headers["retry-after"]), /^[1-9]\d*$/)
      // Our idle socket would otherwise hold the server's close until its keep-alive timeout.
      agent.destroy()

      const exit = yield* Effect.timeout(service.exited, "40 seconds")
      assert.deepStrictEqual(exit, { code: 0, signal: null }, yield* service.output)

      // Nothing half-done: no update still leased, and every update that is done had its reply
      // reach the Bot API (the call in flight at the signal included: finished, not cut off).
      const inbox = yield* statusCounts(db, "inbox")
      assert.notProperty(inbox, "processing", JSON.stringify(inbox))
      assert.deepStrictEqual((yield* inboxRow(db, 999))?.payload, inFlightUpdate, "the in-flight update is stored")
      const done = yield* db.rows(
        Schema.Struct({ chat_id: Schema.String, text: Schema.String }),
        `SELECT payload->'message'->'chat'->>'id' AS chat_id, payload->'message'->>'text' AS text FROM inbox WHERE status = 'done'`
      )
      assert.isAtLeast(done.length, 1)
      const delivered = sentMessages(yield* standIn.calls)
      for (const row of done) assert.include(delivered, `${row.chat_id}:${fallbackReply(row.text)}`)
      assert.include(done.map((row) => `${row.chat_id}:${fallbackReply(row.text)}`), inDelivery)
      assert.deepStrictEqual(yield* standIn.aborted, [])
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("a second SIGTERM during a slow shutdown exits at once with a non-zero code", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("shutdown_second_signal"))
      const standIn = yield* BotApiRecorder
      // A delivery that never gets an answer keeps the Sender, and so the shutdown, busy for the whole grace period.
      yield* standIn.setDelay(120_000)
      const service = yield* spawnService(testEnv(url, standIn.url, { SHUTDOWN_GRACE_MS: "60000" }), { startTimeout: "50 seconds" })
      const answer = yield* postUpdate(service.baseUrl, sampleUpdate({ updateId: 4001, chatId: 4001, text: "slow to deliver" }))
      assert.strictEqual(answer.status, 200)
      yield* standIn.awaitCalls((calls) => sentMessages(calls).length >= 1, "20 seconds")

      yield* service.kill("SIGTERM")
      yield* awaitClosedPort(Number(new URL(service.baseUrl).port))
      // The first signal alone does not end the process: it is draining, waiting for the delivery.
      assert.isTrue(service.child.exitCode === null && service.child.signalCode === null, yield* service.output)
      const second = yield* Clock.currentTimeMillis
      yield* service.kill("SIGTERM")
      const exit = yield* Effect.timeout(service.exited, "20 seconds")
      const elapsed = (yield* Clock.currentTimeMillis) - second
      assert.notStrictEqual(exit.code, 0, yield* service.output)
      assert.isTrue(exit.code !== null || exit.signal !== null)
      // "At once": well inside the minute the first shutdown would still be waiting.
      assert.isBelow(elapsed, 10_000)
    }).pipe(Effect.provide(BotApiRecorder.layer())))
})

describe("shutdown with handlers running", () => {
  it.live(
    "SIGTERM while handlers run: the one that finishes within SHUTDOWN_GRACE_MS commits, the one past it is rolled back and its update returned, and the next process does it once",
    () =>
      Effect.gen(function*() {
        const url = yield* Effect.promise(() => freshDatabase("shutdown_drain"))
        const db = yield* pgProbe(url)
        const standIn = yield* BotApiRecorder
        const grace = 4_000
        const env = testEnv(url, standIn.url, {
          SHUTDOWN_GRACE_MS: String(grace),
          UPDATE_TIMEOUT_MS: "60000",
          SEND_RATE_PER_SECOND: "10000"
        })
        const service = yield* spawnService(env, { startTimeout: "50 seconds" })

        // Uncommitted users rows of ours make each `/start` wait inside its transaction until let go.
        const [quick, slow] = [5_101, 5_102] as const
        const quickLock = yield* holdTransaction(url)
        const slowLock = yield* holdTransaction(url)
        yield* quickLock.query("INSERT INTO users (telegram_id) VALUES ($1)", [quick])
        yield* slowLock.query("INSERT INTO users (telegram_id) VALUES ($1)", [slow])
        for (const id of [quick, slow]) {
          const answer = yield* postUpdate(service.baseUrl, sampleUpdate({ updateId: id, chatId: id, text: "/start" }))
          assert.strictEqual(answer.status, 200)
        }
        yield* awaitLockedStatements(db, 2)

        const signalled = yield* Clock.currentTimeMillis
        yield* service.kill("SIGTERM")
        yield* awaitClosedPort(Number(new URL(service.baseUrl).port))
        // Shutting down now: one handler is let go within the grace period, the other never is.
        yield* quickLock.rollback
        const exit = yield* Effect.timeout(service.exited, "40 seconds")
        const exitedAfter = (yield* Clock.currentTimeMillis) - signalled
        const output = yield* service.output
        assert.deepStrictEqual(exit, { code: 0, signal: null }, output)
        assert.isAtLeast(exitedAfter, grace, "the slow handler was given the whole grace period")

        const InboxState = Schema.Struct({ update_id: Schema.String, status: Schema.String, lease_id: Schema.NullOr(Schema.String) })
        const states = yield* db.rows(InboxState, `SELECT update_id::text, status, lease_id::text FROM inbox ORDER BY update_id`)
        assert.deepStrictEqual(states, [
          { update_id: String(quick), status: "done", lease_id: null },
          { update_id: String(slow), status: "pending", lease_id: null }
        ], "the handler that finished in time committed; the one past it was returned")
        const users = (ids: ReadonlyArray<number>) =>
          Effect.map(
            db.rows(
              Schema.Struct({ telegram_id: Schema.String }),
              `SELECT telegram_id::text FROM users WHERE telegram_id = ANY($1::bigint[]) ORDER BY 1`,
              [ids]
            ),
            (rows) => rows.map((row) => Number(row.telegram_id))
          )
        assert.deepStrictEqual(yield* users([quick, slow]), [quick], "the interrupted handler's write was rolled back")

        // The next process does the returned update, once.
        yield* slowLock.rollback
        yield* spawnService(testEnv(url, standIn.url, { SEND_RATE_PER_SECOND: "10000" }), { startTimeout: "50 seconds" })
        const greeted = (calls: ReadonlyArray<RecordedCall>, chatId: number) =>
          sentMessages(calls).filter((message) => message.startsWith(`${chatId}:Hello`)).length
        yield* standIn.awaitCalls((calls) => greeted(calls, quick) >= 1 && greeted(calls, slow) >= 1, "30 seconds")
        // Its reply is made while it runs; its done mark follows.
        const finished = yield* eventually(
          "the returned update done",
          db.rows(InboxState, `SELECT update_id::text, status, lease_id::text FROM inbox WHERE update_id = $1`, [slow]),
          (rows) => rows[0]?.status === "done",
          { timeout: "10 seconds", interval: "20 millis" }
        )
        assert.strictEqual(finished[0]?.status, "done")
        assert.deepStrictEqual(yield* users([quick, slow]), [quick, slow])
        yield* waitForEmptyOutbox(db)
        const calls = yield* standIn.calls
        assert.deepStrictEqual([greeted(calls, quick), greeted(calls, slow)], [1, 1], "each update answered once across both processes")
      }).pipe(Effect.provide(BotApiRecorder.layer())),
    120_000
  )
})

describe("sandbox mode", () => {
  it.live("without BOT_TOKEN the service prints a curl command, and posting it gets the bot's reply logged", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("sandbox_curl"))
      // DATABASE_URL is set so the sandbox does not start an embedded database under .data/; with
      // a DATABASE_URL the sandbox is never a fallback, so it is asked for.
      const service = yield* spawnService({ BOT_MODE: "sandbox", DATABASE_URL: url }, { startTimeout: "50 seconds" })
      const line = yield* service.waitForOutput(/^curl .*$/m)
      const parsed = /^curl -X POST (\S+) -H 'content-type: application\/json' -d '(.*)'$/.exec(line)
      assert.isNotNull(parsed, line)
      const [, target, body] = parsed!
      const sent = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Schema.Struct({
        message: Schema.Struct({ chat: Schema.Struct({ id: Schema.Number }), text: Schema.String })
      })))(body!).pipe(Effect.orDie)

      const answer = yield* Effect.promise(() =>
        fetch(target!, { method: "POST", headers: { "content-type": "application/json" }, body: body! }).then((r) => r.status)
      )
      assert.strictEqual(answer, 200)
      const reply = yield* service.waitForOutput(new RegExp(`bot → chat ${sent.message.chat.id}: .*`))
      assert.include(reply, sent.message.text)

      yield* service.kill("SIGTERM")
      assert.deepStrictEqual(yield* Effect.timeout(service.exited, "30 seconds"), { code: 0, signal: null })
    }))
})
