import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schema } from "effect"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { MAX_IN_PLACE_FLOOD_WAIT } from "../../src/telegram/BotApi.ts"
import { echoAfterCommit } from "../support/handlers/EchoAfterCommit.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { AppDatabase, freshDatabase } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

// The sender carries the calls handlers make after commit: this bot's only reply is one.
const app = (label: string, env: Record<string, string>) =>
  Layer.unwrap(
    Effect.map(
      Effect.promise(() => freshDatabase(label)),
      (url) => Layer.merge(testAppLayer({ databaseUrl: url, env, handlers: [echoAfterCommit] }), AppDatabase.layer(url))
    )
  )

const MAX_IN_PLACE_WAIT_SECONDS = Duration.toSeconds(MAX_IN_PLACE_FLOOD_WAIT)

const sent = (chatIds: ReadonlySet<number>) => (calls: ReadonlyArray<RecordedCall>) =>
  calls.filter((call) => call.method === "sendMessage" && chatIds.has(Number(call.params["chat_id"])))

describe("Sender", () => {
  it.live("never sends more than SEND_RATE_PER_SECOND calls per second, all chats together, after commit or at once", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiRecorder
      const chats = Array.from({ length: 15 }, (_, i) => 9100 + i)
      yield* Effect.forEach(chats, (chatId, i) => postUpdate(base, sampleUpdate({ updateId: 91_000 + i, chatId, text: `rate ${i}` })), {
        concurrency: 15
      })
      const calls = sent(new Set(chats))(yield* standIn.awaitCalls((calls) => sent(new Set(chats))(calls).length === 15, "20 seconds"))
      // A bucket of 5 per second: after the first 5, ten more need at least two seconds.
      const times = calls.map((call) => call.at).sort((a, b) => a - b)
      assert.isAtLeast(times[times.length - 1]! - times[0]!, 1_600)
      for (let i = 0; i + 10 < times.length; i++) {
        assert.isAtLeast(times[i + 10]! - times[i]!, 1_000, "no 11 calls within one second")
      }
    }).pipe(Effect.provide(app("sender_rate", { SEND_RATE_PER_SECOND: "5" }))))

  it.live("a reply refused for good (403, blocked by the user) is kept as failed and the chat's next reply still goes out", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiRecorder
      yield* standIn.script("sendMessage", [{
        status: 403,
        body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" }
      }])
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 92_001, chatId: 9200, text: "first" }))).status, 200)
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 92_002, chatId: 9200, text: "second" }))).status, 200)
      const calls = yield* standIn.awaitCalls(
        (calls) => calls.some((call) => call.method === "sendMessage" && String(call.params["text"]).includes("second")),
        "15 seconds"
      )
      const texts = sent(new Set([9200]))(calls).map((call) => String(call.params["text"]))
      // The refused reply was attempted once, not retried; the next one went out after it.
      assert.strictEqual(texts.filter((text) => text.includes("first")).length, 1)
      assert.isBelow(texts.findIndex((text) => text.includes("first")), texts.findIndex((text) => text.includes("second")))
      const rows = yield* (yield* AppDatabase).rows(
        Schema.Struct({ status: Schema.String, last_error: Schema.NullOr(Schema.String) }),
        "SELECT status, last_error FROM outbox WHERE update_id = 92001"
      )
      assert.strictEqual(rows[0]?.status, "failed")
      assert.include(rows[0]?.last_error ?? "", "blocked by the user")
    }).pipe(Effect.provide(app("sender_blocked", { SEND_RATE_PER_SECOND: "1000" }))))

  it.live("a 429 longer than the in-place cap puts the call back in the outbox for that long, holding no lease, then sends it once", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiRecorder
      const pg = yield* AppDatabase
      yield* standIn.script("sendMessage", [{
        status: 429,
        body: { ok: false, error_code: 429, description: "Too Many Requests: retry after 7", parameters: { retry_after: 7 } }
      }])
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 93_001, chatId: 9300, text: "flood" }))).status, 200)
      // Back in the table, waiting Telegram's 7 s: not leased, so no lease can run out under it.
      const waiting = yield* eventually(
        "the flood-waiting call back in the outbox",
        pg.rows(
          Schema.Struct({ status: Schema.String, failed: Schema.Boolean, leased: Schema.Boolean, wait_s: Schema.Number }),
          `SELECT status, last_error IS NOT NULL AS failed, lease_id IS NOT NULL AS leased,
                  extract(epoch FROM available_at - now())::float8 AS wait_s
           FROM outbox WHERE update_id = 93001`
        ),
        // Pending after the 429 (not a call still waiting for its first send).
        (rows) => rows[0]?.status === "pending" && rows[0].failed,
        { timeout: "15 seconds" }
      )
      assert.strictEqual(waiting[0]?.leased, false)
      assert.isAbove(waiting[0]?.wait_s ?? 0, MAX_IN_PLACE_WAIT_SECONDS)
      const calls = yield* standIn.awaitCalls((calls) => sent(new Set([9300]))(calls).length === 2, "20 seconds")
      assert.deepStrictEqual(sent(new Set([9300]))(calls).map((call) => String(call.params["text"]).includes("flood")), [true, true])
      const rows = yield* eventually(
        "the call sent",
        pg.rows(
          Schema.Struct({ status: Schema.String, attempts: Schema.Number }),
          "SELECT status, attempts FROM outbox WHERE update_id = 93001"
        ),
        (rows) => rows[0]?.status === "sent",
        { timeout: "5 seconds" }
      )
      assert.strictEqual(rows[0]?.status, "sent")
      // Telegram's flood wait is not the call's failure: only the delivery that went through counts.
      assert.strictEqual(rows[0]?.attempts, 1)
    }).pipe(Effect.provide(app("sender_flood", { SEND_RATE_PER_SECOND: "1000" }))))
})
