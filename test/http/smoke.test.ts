import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { BotApiStandIn } from "../../src/sandbox/BotApiStandIn.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { freshDatabase } from "../support/TestDatabase.ts"
import { baseUrl, postUpdate, testAppLayer } from "../support/TestApp.ts"

describe("smoke", () => {
  it.live("a /start update is stored, answered 200 and replied to", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiStandIn
      const response = yield* postUpdate(base, sampleUpdate({ updateId: 1, chatId: 77, text: "/start" }))
      assert.strictEqual(response.status, 200)
      const calls = yield* standIn.awaitCalls((calls) => calls.some((call) => call.method === "sendMessage"), "10 seconds")
      assert.match(String(calls.find((call) => call.method === "sendMessage")?.params["text"]), /Hello, Ada/)
    }).pipe(
      Effect.provide(Layer.unwrap(Effect.map(Effect.promise(() => freshDatabase("smoke")), (url) => testAppLayer({ databaseUrl: url }))))
    ))
})
