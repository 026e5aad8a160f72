import { assert, describe, it } from "@effect/vitest"
import { Effect, Latch } from "effect"
import type { RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { startFaultyApp } from "../support/FaultyApp.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { repliesByChat } from "../support/Load.ts"
import { preCheckoutUpdate } from "../payments/PaymentSupport.ts"
import { postUpdate } from "../support/TestHttp.ts"

const POOL_MAX = 5
const FIRST_CHAT = 882_000
const held = [22_001, 22_002, 22_003, 22_004, 22_005]
const backlog = Array.from({ length: 20 }, (_, i) => 22_010 + i)
const chatOf = (updateId: number) => FIRST_CHAT + (updateId - 22_000)

const isAnswer = (queryId: string) => (call: RecordedCall) =>
  call.method === "answerPreCheckoutQuery" && call.params["pre_checkout_query_id"] === queryId
const isReplyTo = (updateIds: ReadonlyArray<number>) => {
  const chats = new Set(updateIds.map((updateId) => String(chatOf(updateId))))
  return (call: RecordedCall) => call.method === "sendMessage" && chats.has(String(call.params["chat_id"]))
}

/** The app with one worker (the pool's size minus what ingress, health and the loops need). */
const startBusyApp = (label: string) =>
  Effect.gen(function*() {
    const app = yield* startFaultyApp(label, {
      DB_POOL_MAX: String(POOL_MAX),
      UPDATE_TIMEOUT_MS: "60000",
      SEND_RATE_PER_SECOND: "10000",
      SHUTDOWN_GRACE_MS: "200"
    })
    const post = (update: unknown, what: string) =>
      Effect.map(postUpdate(app.base, update), (response) => assert.strictEqual(response.status, 200, `${what}: ${response.body}`))
    const postText = (updateId: number, text: string) =>
      post(sampleUpdate({ updateId, chatId: chatOf(updateId), text }), `update ${updateId}`)
    return { app, post, postText }
  })

describe("busy workers", () => {
  it.live("with every worker held in a handler, the webhook still stores every update (200)", () =>
    Effect.gen(function*() {
      const { app, postText } = yield* startBusyApp("busy_ingress")
      // As many handlers that hold their transaction as the pool has connections: whatever the
      // worker count, every worker ends up held.
      for (const updateId of held) yield* postText(updateId, "/latch")
      yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.marker === "latch"), "20 seconds")
      for (const updateId of backlog) yield* postText(updateId, `u${updateId}`)

      yield* Latch.open(app.latch)
      const calls = yield* app.standIn.awaitCalls((calls) => calls.filter(isReplyTo(backlog)).length === backlog.length, "60 seconds")
      const replies = repliesByChat(calls)
      for (const updateId of backlog) assert.deepStrictEqual(replies.get(chatOf(updateId)), [`u${updateId}`])
    }), 90_000)

  it.live("a pre-checkout query posted behind a backlog is answered before the backlog", () =>
    Effect.gen(function*() {
      const { app, post, postText } = yield* startBusyApp("busy_urgent")
      yield* postText(held[0]!, "/latch")
      yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.marker === "latch"), "20 seconds")
      for (const updateId of backlog) yield* postText(updateId, `u${updateId}`)
      const query = preCheckoutUpdate(chatOf(22_050), { payload: "o1.not-a-real-order", amount: 50, currency: "XTR" }, 22_050)
      yield* post(query.update, "pre-checkout")

      yield* Latch.open(app.latch)
      const calls = yield* app.standIn.awaitCalls(
        (calls) => calls.some(isAnswer(query.id)) && calls.filter(isReplyTo(backlog)).length === backlog.length,
        "60 seconds"
      )
      // Only the update that was running when the query arrived may finish before it.
      const answeredAt = calls.findIndex(isAnswer(query.id))
      const firstQueued = calls.findIndex(isReplyTo(backlog))
      assert.isBelow(
        answeredAt,
        firstQueued,
        `the pre-checkout answer came before every update queued ahead of it: ${JSON.stringify(calls.map((call) => call.method))}`
      )
    }), 90_000)
})
