import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { BotApiStandIn, type RecordedCall } from "../../src/sandbox/BotApiStandIn.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

const replyTo = (text: string) => `I don't understand “${text}”. Try /help`

const replies = (calls: ReadonlyArray<RecordedCall>) =>
  calls.filter((call) => call.method === "sendMessage").map((call) => `${String(call.params["chat_id"])}:${String(call.params["text"])}`)

describe("polling mode", () => {
  it.live("deletes the webhook, then long-polls getUpdates, answers what it got and asks for the next offset", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("poller"))
      const standIn = yield* BotApiStandIn
      const first = sampleUpdate({ updateId: 7001, chatId: 7001, text: "polled one" })
      const second = sampleUpdate({ updateId: 7005, chatId: 7002, text: "polled two" })
      // The stand-in has no getUpdates of its own: the first poll returns two updates, the next
      // one is held open like a real long poll until the app stops.
      yield* standIn.script("getUpdates", [
        { status: 200, body: { ok: true, result: [first, second] } },
        { status: 200, body: { ok: true, result: [] }, delayMs: 120_000 }
      ])

      yield* Effect.gen(function*() {
        const calls = yield* standIn.awaitCalls((calls) => {
          const sent = replies(calls)
          return sent.includes(`7001:${replyTo("polled one")}`) && sent.includes(`7002:${replyTo("polled two")}`) &&
            calls.filter((call) => call.method === "getUpdates").length >= 2
        }, "20 seconds")
        const methods = calls.map((call) => call.method)
        assert.isAtLeast(methods.indexOf("deleteWebhook"), 0)
        assert.isBelow(methods.indexOf("deleteWebhook"), methods.indexOf("getUpdates"))
        assert.notInclude(methods, "setWebhook")
        const polls = calls.filter((call) => call.method === "getUpdates")
        assert.notProperty(polls[0]?.params ?? {}, "offset")
        assert.strictEqual(polls[1]?.params["offset"], second.update_id + 1)
        assert.strictEqual(polls.length, 2, "the second poll is still open")
      }).pipe(
        Effect.provide(makeAppLayer().pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(url, standIn.url, { BOT_MODE: "polling" }))))
        ))
      )
    }).pipe(Effect.provide(BotApiStandIn.layer())))
})
