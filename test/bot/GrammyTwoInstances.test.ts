// The grammY adapter keeps the pipeline's per-chat order: two instances on one database, each
// chat's updates posted alternately to both, a grammY Composer answering every one.
import { assert, describe, it } from "@effect/vitest"
import { Composer } from "grammy"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { Bot } from "../../src/bot/Bot.ts"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { grammyFallback } from "../../src/bot/handlers/Basics.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { assertAnsweredInOrder, interleavedPlan, makePostStats, postAlternating } from "../support/Load.ts"
import { baseUrl, testEnv } from "../support/TestApp.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"

const CHATS = 6
const PER_CHAT = 20
const TOTAL = CHATS * PER_CHAT

const startInstance = (name: string, databaseUrl: string, apiRoot: string, handledBy: Map<number, Array<string>>) =>
  Effect.gen(function*() {
    // Notes which instance ran each update, then lets the grammY fallback answer it.
    const recorder = new Composer<SteadfastContext>().use((ctx, next) => {
      handledBy.set(ctx.update.update_id, [...(handledBy.get(ctx.update.update_id) ?? []), name])
      return next()
    })
    const layer = makeAppLayer({ bot: Bot.layerWith([recorder, grammyFallback]) }).pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(databaseUrl, apiRoot, { SEND_RATE_PER_SECOND: "10000" }))))
    )
    const context = yield* Layer.buildWithMemoMap(layer, Layer.makeMemoMapUnsafe(), yield* Effect.scope)
    return yield* Effect.provideContext(baseUrl, context)
  })

describe("grammY middleware on two instances", () => {
  it.live("each update is handled once and every chat's grammY replies arrive in update_id order", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("grammy_two_instances"))
      const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
      const handledBy = new Map<number, Array<string>>()
      const [a, b] = yield* Effect.all([
        startInstance("a", databaseUrl, standIn.url, handledBy),
        startInstance("b", databaseUrl, standIn.url, handledBy)
      ], { concurrency: 2 })
      const pg = yield* pgProbe(databaseUrl)

      const plan = interleavedPlan({ chats: CHATS, perChat: PER_CHAT, firstUpdateId: 90_000, firstChatId: 990_000, seed: 11 })
      const stats = makePostStats()
      yield* postAlternating(plan, [a, b], stats)
      assert.strictEqual(stats.statuses.get(200), TOTAL)
      yield* assertAnsweredInOrder(plan, standIn, pg)
      assert.strictEqual(handledBy.size, TOTAL)
      assert.isTrue([...handledBy.values()].every((names) => names.length === 1), "no update was handled twice")
      const instances = new Set([...handledBy.values()].flat())
      assert.deepStrictEqual([...instances].sort(), ["a", "b"], "both instances handled updates")
    }), 90_000)
})
