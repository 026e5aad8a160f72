import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, SubscriptionRef } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { Bot } from "../../src/bot/Bot.ts"
import { Database } from "../../src/db/Database.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { makeProbe, type Probe, recordingThenShipped } from "../support/handlers/FaultyHandlers.ts"
import { baseUrl, testEnv } from "../support/TestApp.ts"
import { assertAnsweredInOrder, interleavedPlan, makePostStats, postAlternating, slicePlan } from "../support/Load.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

const CHATS = 10
const PER_CHAT = 30
const TOTAL = CHATS * PER_CHAT

/**
 * One instance of the app on `databaseUrl`: its own pool, dispatcher, sender and HTTP server.
 * A fresh memo map keeps it from sharing any layer with the other instance in this process.
 */
const startInstance = (name: string, databaseUrl: string, apiRoot: string, probe: Probe) =>
  Effect.gen(function*() {
    const handlers = recordingThenShipped(probe, name)
    const layer = makeAppLayer({ bot: Bot.layerWith(handlers) }).pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(databaseUrl, apiRoot, { SEND_RATE_PER_SECOND: "10000" }))))
    )
    const context = yield* Layer.buildWithMemoMap(layer, Layer.makeMemoMapUnsafe(), yield* Effect.scope)
    return { name, base: yield* Effect.provideContext(baseUrl, context), db: Context.get(context, Database) }
  })

describe("two instances on one database", () => {
  it.live(
    "updates posted alternately to two instances are each handled exactly once, and every chat's replies arrive in update_id order",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("two_instances"))
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const probe = yield* makeProbe
        const [a, b] = yield* Effect.all([
          startInstance("a", databaseUrl, standIn.url, probe),
          startInstance("b", databaseUrl, standIn.url, probe)
        ], { concurrency: 2 })
        assert.notStrictEqual(a.db, b.db, "each instance has its own pool")
        const pg = yield* pgProbe(databaseUrl)

        const plan = interleavedPlan({ chats: CHATS, perChat: PER_CHAT, firstUpdateId: 80_000, firstChatId: 970_000, seed: 2 })
        const stats = makePostStats()
        // Half of each chat's updates, then the rest once every chat is idle, starting on the other
        // instance: a chat stays with the instance that runs it while it is busy, so only an idle
        // chat can move, and some must.
        yield* postAlternating(slicePlan(plan, 0, PER_CHAT / 2), [a.base, b.base], stats)
        yield* eventually("the first halves done", pg.inboxStatuses, (statuses) => statuses["done"] === TOTAL / 2, {
          timeout: "30 seconds"
        })
        yield* postAlternating(slicePlan(plan, PER_CHAT / 2, PER_CHAT), [b.base, a.base], stats)
        assert.strictEqual(stats.statuses.get(200), TOTAL)
        yield* assertAnsweredInOrder(plan, standIn, pg)
        assert.strictEqual((yield* standIn.calls).filter((call) => call.method === "sendMessage").length, TOTAL, "one reply per update")

        // Each update entered a handler once, in one instance; both instances took part, and
        // chats had their updates handled by both (so order held across instances).
        const entries = yield* SubscriptionRef.get(probe)
        const byUpdate = new Map<number, Array<string>>()
        for (const entry of entries) byUpdate.set(entry.updateId, [...(byUpdate.get(entry.updateId) ?? []), entry.instance])
        assert.strictEqual(byUpdate.size, TOTAL)
        assert.isTrue([...byUpdate.values()].every((instances) => instances.length === 1), "no update was handled twice")
        const handledBy = (name: string) => entries.filter((entry) => entry.instance === name).length
        assert.isAbove(handledBy("a"), 0)
        assert.isAbove(handledBy("b"), 0)
        const sharedChats = plan.filter((chat) => new Set(chat.map((planned) => byUpdate.get(planned.updateId)?.[0])).size === 2)
        assert.isAbove(sharedChats.length, 0, "some chat was served by both instances")
      }),
    90_000
  )
})
