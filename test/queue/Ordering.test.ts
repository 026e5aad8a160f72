import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Latch, Layer } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { startFaultyApp } from "../support/FaultyApp.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { assertAnsweredInOrder, interleavedPlan, makePostStats, postPlan, repliesByChat } from "../support/Load.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"
import { postUpdate } from "../support/TestHttp.ts"

const CHATS = 20
const PER_CHAT = 50
const TOTAL = CHATS * PER_CHAT

describe("per-chat order under concurrency", () => {
  it.live(
    "20 chats × 50 updates posted concurrently (with redeliveries): each chat's replies arrive in update_id order, each update answered exactly once",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("ordering"))
        // 20 workers: every chat's next update can be in flight at once, the most room for disorder.
        const app = yield* Layer.build(testAppLayer({ databaseUrl, env: { SEND_RATE_PER_SECOND: "10000", DB_POOL_MAX: "24" } }))
        const standIn = Context.get(app, BotApiRecorder)
        const base = yield* Effect.provideContext(baseUrl, app)
        const probe = yield* pgProbe(databaseUrl)

        const plan = interleavedPlan({ chats: CHATS, perChat: PER_CHAT, firstUpdateId: 10_000, firstChatId: 700_000, seed: 20261128 })
        const stats = makePostStats()
        yield* postPlan(Effect.succeed(base), plan, stats, { redeliverEvery: 10 })
        assert.strictEqual(stats.statuses.get(200), TOTAL + TOTAL / 10, "every post (redeliveries included) was answered 200")

        yield* assertAnsweredInOrder(plan, standIn, probe)
        assert.strictEqual((yield* standIn.calls).filter((call) => call.method === "sendMessage").length, TOTAL)
      }),
    90_000
  )

  it.live(
    "a chat's next update waits, stored and ready, for as long as the previous one runs, while other chats go on",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("ordering_slow", {
          UPDATE_TIMEOUT_MS: "60000",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        })
        const post = (updateId: number, chatId: number, text: string) =>
          Effect.map(postUpdate(app.base, sampleUpdate({ updateId, chatId, text })), (response) => assert.strictEqual(response.status, 200))
        const chatId = 881_000
        yield* post(21_001, chatId, "/latch")
        yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.updateId === 21_001), "20 seconds")
        // The chat's next update is stored while the first one is still in its handler, then
        // other chats' updates: once those are answered, the dispatcher has had every chance to
        // run 21002 too.
        yield* post(21_002, chatId, "u21002")
        const others = [21_003, 21_004, 21_005, 21_006, 21_007]
        yield* Effect.forEach(others, (updateId, i) => post(updateId, chatId + 1 + i, `u${updateId}`), { discard: true })
        yield* app.standIn.awaitCalls((calls) => {
          const replies = repliesByChat(calls)
          return others.every((updateId, i) => replies.get(chatId + 1 + i)?.includes(`u${updateId}`) === true)
        }, "30 seconds")

        const waiting = yield* app.pg.query<{ status: string }>(`SELECT status FROM inbox WHERE update_id = 21002`)
        assert.notStrictEqual(waiting[0]?.status, "done", "the chat's next update did not run beside the first")
        assert.deepStrictEqual(repliesByChat(yield* app.standIn.calls).get(chatId), undefined, "nothing was sent to the held chat yet")

        yield* Latch.open(app.latch)
        const calls = yield* app.standIn.awaitCalls((calls) => (repliesByChat(calls).get(chatId)?.length ?? 0) >= 2, "30 seconds")
        assert.deepStrictEqual(repliesByChat(calls).get(chatId), ["latched 21001", "u21002"])
      }),
    60_000
  )

  it.live(
    "a chat with a backlog in the table is not overtaken by its newly arrived update: that one is stored unleased and runs after the backlog",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("ordering_backlog", { SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" })
        const chatId = 882_000
        // Left pending by an earlier run (a restart, a dead instance, a retry), claimable in 3 s.
        const backlog = [22_001, 22_002, 22_003]
        for (const updateId of backlog) {
          yield* app.pg.query(
            `INSERT INTO inbox (update_id, chat_key, kind, payload, status, available_at)
             VALUES ($1, $2, 'message', $3::jsonb, 'pending', now() + interval '3 seconds')`,
            [updateId, `chat:${chatId}`, JSON.stringify(sampleUpdate({ updateId, chatId, text: `u${updateId}` }))]
          )
        }
        const posted = yield* postUpdate(app.base, sampleUpdate({ updateId: 22_004, chatId, text: "u22004" }))
        assert.strictEqual(posted.status, 200)
        const stored = yield* app.pg.query<{ status: string; lease_id: string | null }>(
          `SELECT status, lease_id::text FROM inbox WHERE update_id = 22004`
        )
        assert.deepStrictEqual(stored[0], { status: "pending", lease_id: null }, "not handed over in memory: its chat has a backlog")

        const calls = yield* app.standIn.awaitCalls((calls) => (repliesByChat(calls).get(chatId)?.length ?? 0) >= 4, "30 seconds")
        assert.deepStrictEqual(repliesByChat(calls).get(chatId), ["u22001", "u22002", "u22003", "u22004"])
      }),
    60_000
  )

  it.live(
    "a claim never takes a chat's next update while an earlier one runs under another instance's live lease, and takes it once that one is done",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("ordering_claim", { SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" })
        const chatId = 883_000
        const otherChatId = 883_001
        const insert = (updateId: number, chat: number, running: boolean) =>
          app.pg.query(
            `INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, lease_id, locked_until, owner)
             VALUES ($1, $2, 'message', $3::jsonb, $4, $5, $6::uuid, now() + interval '60 seconds', $6::uuid)`,
            [
              updateId,
              `chat:${chat}`,
              JSON.stringify(sampleUpdate({ updateId, chatId: chat, text: `u${updateId}` })),
              running ? "processing" : "pending",
              running ? 1 : 0,
              running ? "00000000-0000-4000-8000-000000000001" : null
            ]
          )
        // Another instance runs the chat's first update; its second and another chat's update wait
        // in the table, ready. One claim would take both if the chat's second were claimable.
        yield* insert(23_001, chatId, true)
        yield* insert(23_002, chatId, false)
        yield* insert(23_003, otherChatId, false)
        yield* app.pg.query(`SELECT pg_notify('steadfast', 'inbox')`)
        yield* app.standIn.awaitCalls((calls) => repliesByChat(calls).get(otherChatId)?.includes("u23003") === true, "30 seconds")
        const waiting = yield* app.pg.query<{ status: string }>(`SELECT status FROM inbox WHERE update_id = 23002`)
        assert.strictEqual(waiting[0]?.status, "pending", "not claimed beside its chat's running update")
        assert.strictEqual(repliesByChat(yield* app.standIn.calls).get(chatId), undefined)

        // The other instance finishes: the chat goes on.
        yield* app.pg.query(
          `UPDATE inbox SET status = 'done', finished_at = now(), lease_id = NULL, locked_until = NULL, owner = NULL WHERE update_id = 23001`
        )
        yield* app.pg.query(`SELECT pg_notify('steadfast', 'inbox')`)
        const calls = yield* app.standIn.awaitCalls((calls) => repliesByChat(calls).get(chatId)?.includes("u23002") === true, "30 seconds")
        assert.deepStrictEqual(repliesByChat(calls).get(chatId), ["u23002"])
      }),
    60_000
  )
})
