import { assert, describe, it } from "@effect/vitest"
import type { Update } from "grammy/types"
import { Context, Effect, Layer } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { awaitStatus, freshDatabase, pgProbe } from "../support/TestDatabase.ts"
import { postUpdate } from "../support/TestHttp.ts"

const tap = (updateId: number, chatId: number): Update => ({
  update_id: updateId,
  callback_query: {
    id: `cb${updateId}`,
    from: { id: chatId, is_bot: false, first_name: "Ada" },
    chat_instance: `ci${chatId}`,
    data: "buy:coffee",
    message: {
      message_id: 1,
      date: 1767225600,
      chat: { id: chatId, type: "private", first_name: "Ada" },
      from: { id: 1000000001, is_bot: true, first_name: "Steadfast Sandbox", username: "steadfast_sandbox_bot" },
      text: "Choose"
    }
  }
})

describe("stale updates", () => {
  it.live(
    "a button press whose turn comes after CALLBACK_QUERY_MAX_AGE_SECONDS is skipped as expired, without running",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("expiry"))
        const app = yield* Layer.build(
          testAppLayer({ databaseUrl, env: { CALLBACK_QUERY_MAX_AGE_SECONDS: "1", SEND_RATE_PER_SECOND: "1000" } })
        )
        const base = yield* Effect.provideContext(baseUrl, app)
        const standIn = Context.get(app, BotApiRecorder)
        const pg = yield* pgProbe(databaseUrl)
        const chatId = 680_001
        // The chat's first update takes 2 s (its reply waits at the Bot API); the tap queues behind it.
        yield* standIn.script("sendMessage", [{ status: 200, body: { ok: true, result: true }, delayMs: 2_000 }])
        assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 68_001, chatId, text: "slow" }))).status, 200)
        assert.strictEqual((yield* postUpdate(base, tap(68_002, chatId))).status, 200)
        const expired = yield* awaitStatus(pg, 68_002, "skipped", "20 seconds")
        assert.include(expired.last_error ?? "", "expired")
        assert.isFalse((yield* standIn.calls).some((call) => call.method === "answerCallbackQuery"), "the stale tap was never handled")
        // A tap whose turn comes in time is handled.
        assert.strictEqual((yield* postUpdate(base, tap(68_003, chatId))).status, 200)
        yield* standIn.awaitCalls((calls) => calls.some((call) => call.method === "answerCallbackQuery"), "20 seconds")
      }),
    60_000
  )
})
