import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { type FaultyApp, startFaultyApp } from "../support/FaultyApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { awaitStatus, inboxRow } from "../support/TestDatabase.ts"

const MAX_ATTEMPTS = 3
// Small attempts keep the real 1 s / 2 s retry backoff short; a short grace keeps teardown fast.
const env = { MAX_ATTEMPTS: String(MAX_ATTEMPTS), SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }

const postText = (app: FaultyApp, updateId: number, chatId: number, text: string) =>
  Effect.map(postUpdate(app.base, sampleUpdate({ updateId, chatId, text })), (response) => assert.strictEqual(response.status, 200))

const repliedTo = (app: FaultyApp, chatId: number, text: string) =>
  app.standIn.awaitCalls(
    (calls) =>
      calls.some((call) =>
        call.method === "sendMessage" && call.params["chat_id"] === chatId && String(call.params["text"]).includes(text)
      ),
    "30 seconds"
  )

const marksOf = (app: FaultyApp, updateId: number) =>
  Effect.map(
    app.pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM test_marks WHERE update_id = $1`, [updateId]),
    (rows) => rows[0]?.n
  )

const outboxRowsOf = (app: FaultyApp, updateId: number) =>
  Effect.map(app.pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE update_id = $1`, [updateId]), (rows) => rows[0]?.n)

describe("failures, retries and dead letters", () => {
  it.live(
    "a failing update is retried up to MAX_ATTEMPTS, dead-lettered with its last error, its writes and after-commit calls rolled back, its reply sent once and recorded for the re-runs, and the chat's next update is answered after it",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("retries_fail", env)
        const chatId = 810_001
        yield* postText(app, 5_001, chatId, "/fail")
        yield* postText(app, 5_002, chatId, "u5002")

        yield* repliedTo(app, chatId, "u5002")
        const failed = yield* inboxRow(app.pg, 5_001)
        assert.strictEqual(failed?.status, "dead", "the failing update is dead-lettered before its chat moves on")
        assert.strictEqual(failed?.attempts, MAX_ATTEMPTS)
        assert.include(failed?.last_error ?? "", "marker /fail in update 5001")
        const next = yield* awaitStatus(app.pg, 5_002, "done")
        assert.isTrue(next.finished_at!.getTime() >= failed!.finished_at!.getTime(), "the next update finished after the dead letter")

        const attempts = (yield* awaitProbe(app.probe, (entries) => entries.length >= MAX_ATTEMPTS, "5 seconds"))
          .filter((entry) => entry.updateId === 5_001)
        assert.strictEqual(attempts.length, MAX_ATTEMPTS, "the handler really ran once per attempt")
        // Each attempt inserted a mark and queued an after-commit reply before failing: none of it committed.
        assert.strictEqual(yield* marksOf(app, 5_001), 0)
        assert.strictEqual(yield* outboxRowsOf(app, 5_001), 0)
        const calls = yield* app.standIn.calls
        assert.isFalse(
          calls.some((call) => String(call.params["text"]).includes("committed 5001")),
          "no after-commit call of a failed attempt was sent"
        )
        // Its reply made at once reached Telegram once; the re-runs got the recorded Message back.
        assert.strictEqual(calls.filter((call) => String(call.params["text"]).includes("about to fail 5001")).length, 1)
        assert.deepStrictEqual(new Set(attempts.map((entry) => entry.messageId)).size, 1, "every attempt got the same Message")
        assert.strictEqual(
          calls.filter((call) => call.params["chat_id"] === chatId).length,
          2,
          "the chat got the failing update's one reply and the next update's reply"
        )

        yield* app.logs.await("the dead letter", (log) =>
          log.level === "Error" && log.message.includes("update 5001 dead-lettered after 3 attempt(s)"))
      }),
    60_000
  )

  it.live(
    "a handler that dies or throws is logged with its cause, counted as a failed attempt until dead, and other chats keep being served meanwhile",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("retries_defect", env)
        yield* postText(app, 6_001, 820_001, "/die")
        yield* postText(app, 6_002, 820_002, "/throw")
        yield* awaitProbe(app.probe, (entries) =>
          entries.some((e) => e.marker === "die") && entries.some((e) => e.marker === "throw"), "20 seconds")

        // While both are failing and being retried, other chats are answered.
        for (const [i, chatId] of [820_003, 820_004, 820_005].entries()) {
          yield* postText(app, 6_010 + i, chatId, `u${6_010 + i}`)
          yield* repliedTo(app, chatId, `u${6_010 + i}`)
        }

        const died = yield* app.logs.await("the /die defect", (log) =>
          log.level === "Error" && log.message.includes("update 6001 (message) failed on attempt 1"))
        assert.include(died.cause, "defect from /die in update 6001")
        assert.match(died.cause, /\n\s+at /, "the logged cause carries a stack trace")
        const thrown = yield* app.logs.await("the /throw defect", (log) =>
          log.level === "Error" && log.message.includes("update 6002 (message) failed on attempt 1"))
        assert.include(thrown.cause, "TypeError: thrown from /throw in update 6002")

        for (const updateId of [6_001, 6_002]) {
          const row = yield* awaitStatus(app.pg, updateId, "dead")
          assert.strictEqual(row.attempts, MAX_ATTEMPTS)
          assert.strictEqual(yield* marksOf(app, updateId), 0, `the writes of update ${updateId} were rolled back`)
        }
        assert.include((yield* inboxRow(app.pg, 6_001))?.last_error ?? "", "defect from /die in update 6001")
        assert.include((yield* inboxRow(app.pg, 6_002))?.last_error ?? "", "thrown from /throw in update 6002")

        // And after both are dead letters, the app still serves.
        yield* postText(app, 6_020, 820_001, "u6020")
        yield* repliedTo(app, 820_001, "u6020")
      }),
    60_000
  )
})
