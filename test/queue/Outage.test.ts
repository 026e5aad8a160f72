import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger, Schema } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { makeLogCapture } from "../support/FaultyApp.ts"
import { repliesByChat, withoutImmediateRepeats } from "../support/Load.ts"
import { echoAfterCommit } from "../support/handlers/EchoAfterCommit.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { AppDatabase, freshDatabase, pgProbe } from "../support/TestDatabase.ts"

// Each delivery attempt is one call plus BotApi's 4 quick retries in place: 5 answers.
const ANSWERS_PER_ATTEMPT = 5
/** The delivery attempts after which the sender used to fail a call for good. */
const OLD_ATTEMPT_LIMIT = 8

const Progress = Schema.Struct({ status: Schema.String, attempts: Schema.Number })

const internalError = { status: 500, body: { ok: false, error_code: 500, description: "Internal Server Error" } }

const app = (label: string, env: Record<string, string>, logs = makeLogCapture()) =>
  Layer.unwrap(
    Effect.map(
      Effect.promise(() => freshDatabase(label)),
      (url) => Layer.merge(testAppLayer({ databaseUrl: url, env, handlers: [echoAfterCommit] }), AppDatabase.layer(url))
    )
  ).pipe(
    Layer.provide(Logger.layer([logs.logger], { mergeWithExisting: true }))
  )

describe("Bot API outage", () => {
  it.live(
    "the Bot API down for longer than the old 8-attempt limit, then back: every reply arrives, in chat order",
    () =>
      Effect.gen(function*() {
        const base = yield* baseUrl
        const standIn = yield* BotApiRecorder
        const pg = yield* AppDatabase
        const chats = [9_510, 9_511]
        // More 500s than two chats' first calls could use up under the old limit: one of them at least
        // would have been failed for good.
        yield* standIn.script(
          "sendMessage",
          Array.from({ length: chats.length * OLD_ATTEMPT_LIMIT * ANSWERS_PER_ATTEMPT + 10 }, () => internalError)
        )
        const texts = (chatId: number) => [1, 2, 3].map((n) => `outage ${chatId} #${n}`)
        yield* Effect.forEach(chats, (chatId, c) =>
          Effect.forEach(texts(chatId), (text, n) =>
            Effect.flatMap(
              postUpdate(base, sampleUpdate({ updateId: 95_100 + c * 10 + n, chatId, text })),
              (response) => Effect.sync(() => assert.strictEqual(response.status, 200))
            ), { discard: true }), { concurrency: "unbounded", discard: true })

        // While it waits, /health says so (a warning: the instance still takes updates).
        const outboxCheck = Effect.promise(() =>
          fetch(`${base}/health`).then(async (response) =>
            (await response.json() as { checks: Record<string, ReadonlyArray<{ status: string; observedValue?: unknown }>> })
              .checks["outbox:waiting"]?.[0]
          )
        )
        const waiting = yield* eventually("outbox:waiting to warn", outboxCheck, (check) => check?.status === "warn", {
          timeout: "30 seconds",
          interval: "250 millis"
        })
        assert.deepInclude(waiting?.observedValue, { open: 6 })
        const rows = yield* eventually(
          "every reply settled",
          pg.rows(Progress, "SELECT status, attempts FROM outbox WHERE update_id BETWEEN 95100 AND 95199 ORDER BY id"),
          (rows) => rows.length === 6 && rows.every((row) => row.status !== "pending" && row.status !== "sending"),
          { timeout: "150 seconds", interval: "250 millis" }
        )
        assert.deepStrictEqual(rows.map((row) => row.status), Array.from({ length: 6 }, () => "sent"), "no reply given up")
        // The outage outlasted the old limit: some call needed more delivery attempts than it allowed.
        assert.isAbove(Math.max(...rows.map((row) => row.attempts)), OLD_ATTEMPT_LIMIT)
        const replies = repliesByChat(yield* standIn.calls)
        for (const chatId of chats) {
          // A failed attempt repeats the same reply; what counts is the order of distinct replies.
          assert.deepStrictEqual(withoutImmediateRepeats(replies.get(chatId) ?? []), texts(chatId), `replies to chat ${chatId}`)
        }
        // The failures are kept, as one entry per run of the same error.
        const history = yield* pg.rows(
          Schema.Struct({ times: Schema.Number, error: Schema.String }),
          "SELECT times, error FROM failure_history WHERE outbox_id IS NOT NULL ORDER BY id"
        )
        assert.isAbove(history.reduce((sum, row) => sum + row.times, 0), OLD_ATTEMPT_LIMIT)
        assert.include(history[0]?.error ?? "", "500")
        yield* eventually("outbox:waiting to pass again", outboxCheck, (check) => check?.status === "pass", {
          timeout: "30 seconds",
          interval: "250 millis"
        })
      }).pipe(
        // The backoff cap in milliseconds keeps the outage short in real time, not in attempts.
        Effect.provide(app("outage_long", { SEND_RATE_PER_SECOND: "1000", OUTBOX_RETRY_MAX_MS: "100", HEALTH_OUTBOX_WARN_SECONDS: "1" }))
      ),
    200_000
  )

  it.live("a call still failing after OUTBOX_MAX_AGE is expired with a warning, and the chat's next reply goes out", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiRecorder
      // One delivery attempt's worth: by its end (seconds of in-place retries) the call is past 1s.
      yield* standIn.script("sendMessage", Array.from({ length: ANSWERS_PER_ATTEMPT }, () => internalError))
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 95_201, chatId: 9_520, text: "too late" }))).status, 200)
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 95_202, chatId: 9_520, text: "in time" }))).status, 200)
      yield* standIn.awaitCalls(
        (calls) => calls.some((call) => call.method === "sendMessage" && String(call.params["text"]).includes("in time")),
        "60 seconds"
      )
      const warning = yield* logs.await("the give-up warning", (log) => log.message.startsWith("gave up on sendMessage"))
      assert.strictEqual(warning.level, "Warn")
      assert.include(warning.message, "500: Internal Server Error")
      assert.include(warning.message, "retry --call")
      assert.notInclude(warning.message, "refused")
      const rows = yield* eventually(
        "both calls settled",
        (yield* AppDatabase).rows(
          Schema.Struct({ status: Schema.String, last_error: Schema.NullOr(Schema.String) }),
          "SELECT status, last_error FROM outbox WHERE update_id IN (95201, 95202) ORDER BY id"
        ),
        (rows) => rows.length === 2 && rows[1]?.status === "sent",
        { timeout: "10 seconds" }
      )
      assert.strictEqual(rows[0]?.status, "expired")
      assert.include(rows[0]?.last_error ?? "", "500: Internal Server Error")
    }).pipe(Effect.provide(app("outage_expired", { SEND_RATE_PER_SECOND: "1000", OUTBOX_MAX_AGE: "1s" }, logs)))
  }, 90_000)

  it.live(
    "a reply made at once while the Bot API is down fails its update's run without counting it: with MAX_ATTEMPTS=1 every reply still arrives, in chat order",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("outage_at_once"))
        const app = yield* Layer.build(testAppLayer({ databaseUrl, env: { MAX_ATTEMPTS: "1", SEND_RATE_PER_SECOND: "1000" } }))
        const base = yield* Effect.provideContext(baseUrl, app)
        const standIn = Context.get(app, BotApiRecorder)
        // Each run makes its reply once (no retry in place): four runs meet the outage.
        yield* standIn.script("sendMessage", Array.from({ length: 4 }, () => internalError))
        const chatId = 9_530
        const texts = ["down #1", "down #2"]
        for (const [n, text] of texts.entries()) {
          assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 95_301 + n, chatId, text }))).status, 200)
        }
        const calls = yield* standIn.awaitCalls(
          (calls) => withoutImmediateRepeats(repliesByChat(calls).get(chatId) ?? []).length === 2,
          "60 seconds"
        )
        assert.deepStrictEqual(withoutImmediateRepeats(repliesByChat(calls).get(chatId) ?? []), texts)
        const pg = yield* pgProbe(databaseUrl)
        const rows = yield* eventually(
          "both updates done",
          pg.rows(Progress, "SELECT status, attempts FROM inbox WHERE update_id IN (95301, 95302) ORDER BY update_id"),
          (rows) => rows.every((row) => row.status === "done"),
          { timeout: "10 seconds" }
        )
        assert.deepStrictEqual(rows.map((row) => row.status), ["done", "done"], "no update dead-lettered by the outage")
      }),
    90_000
  )
})
