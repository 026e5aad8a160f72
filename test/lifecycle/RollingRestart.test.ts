// A rolling deploy: two instances on one database, each stopped through `npm start` with SIGTERM
// and started again in turn while updates keep coming. Nothing may be lost or late, and every
// chat's replies keep their order across the instances and the restarts.
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Ref } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { answeredCount, assertAnsweredInOrder, interleavedPlan, makePostStats, postUntilStored, toUpdate } from "../support/Load.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"

const CHATS = 20
const PER_CHAT = 25
const TOTAL = CHATS * PER_CHAT

describe("rolling restart", () => {
  it.live(
    "two instances restarted one after the other through npm start under load: every update answered once, in order, none late",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        // Calls take a moment, so deliveries are in flight when a signal comes.
        yield* standIn.setDelay(20)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("rolling_restart"))
        const env = testEnv(databaseUrl, standIn.url, { SEND_RATE_PER_SECOND: "10000" })
        const start = spawnService(env, { command: ["npm", "start"], startTimeout: "60 seconds" })
        const [first, second] = yield* Effect.all([start, start], { concurrency: 2 })
        const bases = [yield* Ref.make(first.baseUrl), yield* Ref.make(second.baseUrl)] as const

        // Chats concurrently; a chat's updates one after another, alternating between the instances.
        const plan = interleavedPlan({ chats: CHATS, perChat: PER_CHAT, firstUpdateId: 90_000, firstChatId: 990_000, seed: 5 })
        const stats = makePostStats()
        const posting = yield* Effect.forkChild(Effect.forEach(plan, (chat) =>
          Effect.forEach(chat, (planned, i) =>
            postUntilStored(Ref.get(bases[i % 2]!), toUpdate(planned), stats), { discard: true }), {
          concurrency: "unbounded",
          discard: true
        }))

        const restart = (index: 0 | 1, service: typeof first) =>
          Effect.gen(function*() {
            yield* service.kill("SIGTERM")
            assert.deepStrictEqual(yield* service.exited, { code: 0, signal: null }, yield* service.output)
            const next = yield* start
            yield* Ref.set(bases[index], next.baseUrl)
          })
        yield* standIn.awaitCalls((calls) =>
          answeredCount(plan, calls) >= TOTAL / 5, "60 seconds")
        yield* restart(0, first)
        yield* standIn.awaitCalls((calls) => answeredCount(plan, calls) >= (2 * TOTAL) / 5, "60 seconds")
        yield* restart(1, second)
        yield* Fiber.join(posting)

        // Shutdown returns what it held, so nothing waits for a lease to expire.
        // A call cut off by a shutdown's end of grace may be repeated by its update's re-run, right after itself.
        yield* assertAnsweredInOrder(plan, standIn, yield* pgProbe(databaseUrl), { timeout: "15 seconds", repeats: "immediate" })
      }),
    180_000
  )
})
