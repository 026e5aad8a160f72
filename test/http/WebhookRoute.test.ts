import { assert, describe, it, layer } from "@effect/vitest"
import { Clock, Duration, Effect, Layer, Schema } from "effect"
import { MAX_BODY_BYTES } from "../../src/http/WebhookRoute.ts"
import { STORE_TIMEOUT } from "../../src/queue/Store.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { baseUrl, TEST_SECRET, testAppLayer } from "../support/TestApp.ts"
import { postUpdate, rawRequest } from "../support/TestHttp.ts"
import { eventually } from "../support/Eventually.ts"
import { AppDatabase, freshDatabase, inboxRow, type PgProbe, pgProbe, pgSession } from "../support/TestDatabase.ts"

const appOnFreshDatabase = (label: string) =>
  Layer.unwrap(
    Effect.map(
      Effect.promise(() => freshDatabase(label)),
      (url) => Layer.merge(testAppLayer({ databaseUrl: url }), AppDatabase.layer(url))
    )
  )

/** The fallback handler's answer to a plain text message. */
const replyTo = (text: string) => `I don't understand “${text}”. Try /help`

const repliesIn = (calls: ReadonlyArray<RecordedCall>, chatId: number) =>
  calls.filter((call) => call.method === "sendMessage" && call.params["chat_id"] === chatId).map((call) => String(call.params["text"]))

/** Waits until the stand-in has received `text` for `chatId`, then returns every reply that chat got. */
const awaitReply = (chatId: number, text: string) =>
  Effect.flatMap(BotApiRecorder, (standIn) =>
    Effect.map(
      standIn.awaitCalls((calls) => repliesIn(calls, chatId).includes(replyTo(text)), "15 seconds"),
      (calls) => repliesIn(calls, chatId)
    ))

const countRows = (db: PgProbe, updateId: number) =>
  Effect.map(
    db.rows(Schema.Struct({ n: Schema.Number }), "SELECT count(*)::int AS n FROM inbox WHERE update_id = $1", [updateId]),
    (rows) => rows[0]?.n ?? 0
  )

const webhookHeaders = { "content-type": "application/json", "x-telegram-bot-api-secret-token": TEST_SECRET }

/** A JSON update padded with a string field to exactly `bytes` bytes. */
const paddedUpdate = (updateId: number, bytes: number) => {
  const head = `{"update_id":${updateId},"padding":"`
  const tail = `"}`
  return head + "x".repeat(bytes - head.length - tail.length) + tail
}

// `layer` builds the app once for the file; with excludeTestServices its tests run on the live
// clock (no TestClock), which the HTTP server, the pool and the stand-in's timeouts need.
layer(appOnFreshDatabase("webhook_route"), { excludeTestServices: true })("POST /webhook", (it) => {
  it.effect("a missing or wrong secret token is answered 401 and nothing is stored", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const update = sampleUpdate({ updateId: 1001, chatId: 1001, text: "no secret" })
      const missing = yield* rawRequest({
        url: `${base}/webhook`,
        headers: { "content-type": "application/json" },
        chunks: [JSON.stringify(update)]
      })
      const wrong = yield* postUpdate(base, update, { "x-telegram-bot-api-secret-token": `${TEST_SECRET}x` })
      const empty = yield* postUpdate(base, update, { "x-telegram-bot-api-secret-token": "" })
      assert.deepStrictEqual([missing.status, wrong.status, empty.status], [401, 401, 401])
      assert.strictEqual(yield* countRows(db, 1001), 0)
    }))

  it.effect("a body that is not declared as JSON is answered 415 and nothing is stored", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const body = JSON.stringify(sampleUpdate({ updateId: 1101, chatId: 1101 }))
      const plain = yield* postUpdate(base, body, { "content-type": "text/plain" })
      const form = yield* postUpdate(base, body, { "content-type": "application/x-www-form-urlencoded" })
      const none = yield* rawRequest({
        url: `${base}/webhook`,
        headers: { "x-telegram-bot-api-secret-token": TEST_SECRET },
        chunks: [body]
      })
      assert.deepStrictEqual([plain.status, form.status, none.status], [415, 415, 415])
      // A charset parameter is still JSON.
      const withCharset = yield* postUpdate(base, body, { "content-type": "Application/JSON; charset=utf-8" })
      assert.strictEqual(withCharset.status, 200)
      assert.strictEqual(yield* countRows(db, 1101), 1)
    }))

  it.effect("a body over 1 MiB with a truthful Content-Length is answered 413 and not stored", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const body = paddedUpdate(1201, MAX_BODY_BYTES + 1)
      const response = yield* rawRequest({
        url: `${base}/webhook`,
        headers: { ...webhookHeaders, "content-length": String(Buffer.byteLength(body)) },
        chunks: [body]
      })
      assert.strictEqual(response.status, 413)
      assert.strictEqual(yield* countRows(db, 1201), 0)
    }))

  it.effect("a chunked body over 1 MiB without Content-Length is answered 413 and not stored", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const body = Buffer.from(paddedUpdate(1301, MAX_BODY_BYTES + 64 * 1024))
      const chunks = Array.from({ length: Math.ceil(body.length / 65536) }, (_, i) => body.subarray(i * 65536, (i + 1) * 65536))
      const response = yield* rawRequest({ url: `${base}/webhook`, headers: { ...webhookHeaders, "transfer-encoding": "chunked" }, chunks })
      assert.strictEqual(response.status, 413)
      assert.strictEqual(yield* countRows(db, 1301), 0)
    }))

  it.effect("a body of exactly 1 MiB, chunked or not, is accepted", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const declared = paddedUpdate(1401, MAX_BODY_BYTES)
      const withLength = yield* rawRequest({
        url: `${base}/webhook`,
        headers: { ...webhookHeaders, "content-length": String(Buffer.byteLength(declared)) },
        chunks: [declared]
      })
      const chunked = Buffer.from(paddedUpdate(1402, MAX_BODY_BYTES))
      const withoutLength = yield* rawRequest({
        url: `${base}/webhook`,
        headers: { ...webhookHeaders, "transfer-encoding": "chunked" },
        chunks: [chunked.subarray(0, 500_000), chunked.subarray(500_000)]
      })
      assert.deepStrictEqual([withLength.status, withoutLength.status], [200, 200])
      assert.deepStrictEqual([yield* countRows(db, 1401), yield* countRows(db, 1402)], [1, 1])
    }))

  it.effect("an update_id of 0 or below is answered 400 and never stored", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const answers = yield* Effect.forEach(
        [0, -7, -1_000_000],
        (id) => postUpdate(base, { update_id: id, message: { message_id: 1, chat: { id: 1590, type: "private" }, text: "hi" } })
      )
      assert.deepStrictEqual(answers.map((r) => r.status), [400, 400, 400])
      assert.include(answers[0]!.body, "positive integer update_id")
      const stored = yield* db.rows(Schema.Struct({ n: Schema.Number }), "SELECT count(*)::int AS n FROM inbox WHERE update_id <= 0")
      assert.strictEqual(stored[0]?.n, 0)
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 1, chatId: 1591, text: "one" }))).status, 200)
    }))

  it.effect("malformed JSON, a JSON array and a missing or non-integer update_id are answered 400", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const bodies = [
        `{"update_id": 1501, "message": `,
        `[{"update_id": 1502}]`,
        `{"message": {"message_id": 1, "chat": {"id": 1500, "type": "private"}}}`,
        `{"update_id": 1503.5}`,
        `{"update_id": "1504"}`,
        `{"update_id": null}`,
        `"just a string"`,
        ``
      ]
      const statuses = yield* Effect.forEach(bodies, (body) => Effect.map(postUpdate(base, body), (r) => r.status))
      assert.deepStrictEqual(statuses, bodies.map(() => 400))
      const stored = yield* db.rows(
        Schema.Struct({ n: Schema.Number }),
        "SELECT count(*)::int AS n FROM inbox WHERE update_id BETWEEN 1500 AND 1599"
      )
      assert.strictEqual(stored[0]?.n, 0)
    }))

  it.effect("a valid update is answered 200 once its row is in the inbox with chat key, kind and the raw JSON, then replied to", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const standIn = yield* BotApiRecorder
      const update = sampleUpdate({ updateId: 1601, chatId: 1601, text: "/start", firstName: "Grace" })
      const response = yield* postUpdate(base, update)
      assert.strictEqual(response.status, 200)
      assert.include(String(response.headers["content-type"]), "application/json")
      // The row is read right after the answer: 200 means committed, not merely queued.
      const row = yield* inboxRow(db, 1601)
      assert.isDefined(row)
      assert.strictEqual(row?.chat_key, "chat:1601")
      assert.strictEqual(row?.kind, "message")
      assert.deepStrictEqual(row?.payload, update)
      const calls = yield* standIn.awaitCalls((calls) => repliesIn(calls, 1601).length > 0, "15 seconds")
      assert.match(repliesIn(calls, 1601)[0]!, /^Hello, Grace!/)
    }))

  it.effect("an update of an unknown kind is answered 200, stored as skipped and never replied to", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const update = { update_id: 1701, future_kind: { chat: { id: 1701 }, text: "from the future" } }
      const response = yield* postUpdate(base, update)
      assert.strictEqual(response.status, 200)
      const row = yield* inboxRow(db, 1701)
      assert.strictEqual(row?.kind, "unknown")
      assert.strictEqual(row?.status, "skipped")
      // Skipped at the door: no worker ever claimed it (a claim counts an attempt).
      assert.strictEqual(row?.attempts, 0)
      assert.deepStrictEqual(row?.payload, update)
      const outbox = yield* db.rows(Schema.Struct({ n: Schema.Number }), "SELECT count(*)::int AS n FROM outbox WHERE update_id = 1701")
      assert.strictEqual(outbox[0]?.n, 0)
      // A later message to the same chat id is answered, and it is the only reply that chat gets.
      yield* postUpdate(base, sampleUpdate({ updateId: 1702, chatId: 1701, text: "after the unknown one" }))
      assert.deepStrictEqual(yield* awaitReply(1701, "after the unknown one"), [replyTo("after the unknown one")])
    }))

  it.effect("an update delivered three times in a row is answered 200 each time and replied to once", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const update = sampleUpdate({ updateId: 1801, chatId: 1801, text: "said once" })
      const statuses = yield* Effect.forEach([1, 2, 3], () => Effect.map(postUpdate(base, update), (r) => r.status))
      assert.deepStrictEqual(statuses, [200, 200, 200])
      yield* awaitReply(1801, "said once")
      // Replies of one chat are delivered in order: once the later update's reply is there,
      // a second reply to the duplicate would have arrived before it.
      yield* postUpdate(base, sampleUpdate({ updateId: 1802, chatId: 1801, text: "said later" }))
      const replies = yield* awaitReply(1801, "said later")
      assert.deepStrictEqual(replies, [replyTo("said once"), replyTo("said later")])
      assert.strictEqual(yield* countRows(db, 1801), 1)
    }))

  it.effect(
    "an update the database cannot store within STORE_TIMEOUT is answered 503 with Retry-After then, and its redelivery is stored and replied to once",
    () =>
      Effect.gen(function*() {
        const base = yield* baseUrl
        const db = yield* AppDatabase
        // The store takes its chat's advisory lock first: holding it keeps the insert waiting.
        const holder = yield* pgSession(db.url)
        yield* holder.query("SELECT pg_advisory_lock(1, hashtext('chat:2101'))")
        const update = sampleUpdate({ updateId: 2101, chatId: 2101, text: "stored late" })

        const started = yield* Clock.currentTimeMillis
        const refused = yield* postUpdate(base, update)
        const elapsed = (yield* Clock.currentTimeMillis) - started
        assert.strictEqual(refused.status, 503)
        assert.match(String(refused.headers["retry-after"]), /^[1-9]\d*$/)
        assert.isAtLeast(elapsed, Duration.toMillis(STORE_TIMEOUT) - 50)
        assert.isBelow(elapsed, Duration.toMillis(STORE_TIMEOUT) + 5_000)

        yield* holder.query("SELECT pg_advisory_unlock(1, hashtext('chat:2101'))")
        const accepted = yield* eventually("the update stored", postUpdate(base, update), (r) => r.status === 200, {
          timeout: "20 seconds",
          interval: "100 millis"
        })
        assert.strictEqual(accepted.status, 200)
        assert.deepStrictEqual(yield* awaitReply(2101, "stored late"), [replyTo("stored late")])
        assert.strictEqual(yield* countRows(db, 2101), 1)
      }),
    30_000
  )

  it.effect("an update delivered three times concurrently is answered 200 each time and replied to once", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const db = yield* AppDatabase
      const update = sampleUpdate({ updateId: 1901, chatId: 1901, text: "raced" })
      const statuses = yield* Effect.forEach([1, 2, 3], () => Effect.map(postUpdate(base, update), (r) => r.status), {
        concurrency: "unbounded"
      })
      assert.deepStrictEqual(statuses, [200, 200, 200])
      yield* awaitReply(1901, "raced")
      yield* postUpdate(base, sampleUpdate({ updateId: 1902, chatId: 1901, text: "raced later" }))
      const replies = yield* awaitReply(1901, "raced later")
      assert.deepStrictEqual(replies, [replyTo("raced"), replyTo("raced later")])
      assert.strictEqual(yield* countRows(db, 1901), 1)
    }))
})

describe("POST /webhook without its database", () => {
  it.live("answers 503 with Retry-After fast while PostgreSQL is down, and stores and answers the redelivery once it is back", () =>
    Effect.gen(function*() {
      const cluster = yield* Effect.acquireRelease(
        Effect.promise(() => startCluster()),
        (cluster) => Effect.promise(() => cluster.dispose())
      )
      const databaseUrl = yield* Effect.promise(() => createDatabase(cluster.url("postgres"), "webhook_outage"))
      yield* Effect.gen(function*() {
        const base = yield* baseUrl
        const update = sampleUpdate({ updateId: 2001, chatId: 2001, text: "during the outage" })
        // The app is up and storing before the outage.
        assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 2000, chatId: 2000, text: "before" }))).status, 200)

        yield* Effect.promise(() => cluster.stop())
        const started = yield* Clock.currentTimeMillis
        const refused = yield* postUpdate(base, update)
        const elapsed = (yield* Clock.currentTimeMillis) - started
        assert.strictEqual(refused.status, 503)
        assert.match(String(refused.headers["retry-after"]), /^[1-9]\d*$/)
        assert.isBelow(elapsed, 5_000)

        yield* Effect.promise(() => cluster.start())
        // Telegram redelivers until it gets a 200; so do we, polling the answer.
        const accepted = yield* eventually("the update stored", postUpdate(base, update), (r) => r.status === 200, {
          timeout: "30 seconds",
          interval: "200 millis"
        })
        assert.strictEqual(accepted.status, 200)
        assert.deepStrictEqual(yield* awaitReply(2001, "during the outage"), [replyTo("during the outage")])
        const row = yield* inboxRow(yield* pgProbe(databaseUrl), 2001)
        assert.deepStrictEqual(row?.payload, update)
      }).pipe(Effect.provide(testAppLayer({ databaseUrl, env: { SHUTDOWN_GRACE_MS: "1000" } })))
    }))
})
