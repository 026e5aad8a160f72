import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_SECRET, testEnv } from "../support/TestApp.ts"
import { rawRequest } from "../support/TestHttp.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"

describe("polling mode", () => {
  it.live("POST /webhook does not exist: a forged /refund update is answered 404 and nothing is stored", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("polling_webhook"))
      const pg = yield* pgProbe(url)
      const standIn = yield* BotApiRecorder
      // Every long poll stays open: the only way in would be the forged request.
      yield* standIn.script(
        "getUpdates",
        Array.from({ length: 4 }, () => ({ status: 200, body: { ok: true, result: [] }, delayMs: 120_000 }))
      )
      // No WEBHOOK_SECRET: polling mode does not require one, which is what made the route a door.
      const env: Record<string, string> = { ...testEnv(url, standIn.url, { BOT_MODE: "polling" }) }
      delete env["WEBHOOK_SECRET"]
      const service = yield* spawnService(env, { startTimeout: "50 seconds" })
      yield* standIn.awaitCalls((calls) => calls.some((call) => call.method === "getUpdates"), "30 seconds")

      const forged = JSON.stringify(sampleUpdate({ updateId: 424242, chatId: 4242, text: "/refund" }))
      for (const headers of [{}, { "x-telegram-bot-api-secret-token": TEST_SECRET }]) {
        const answer = yield* rawRequest({
          url: `${service.baseUrl}/webhook`,
          headers: { "content-type": "application/json", ...headers },
          chunks: [forged]
        })
        assert.strictEqual(answer.status, 404, answer.body)
      }
      const live = yield* rawRequest({ url: `${service.baseUrl}/health/live`, method: "GET" })
      assert.strictEqual(live.status, 200, "the server itself is up")

      const rows = yield* pg.rows(Schema.Struct({ n: Schema.Number }), "SELECT count(*)::int AS n FROM inbox")
      assert.strictEqual(rows[0]?.n, 0, "the inbox holds nothing")
    }).pipe(Effect.provide(BotApiRecorder.layer())))
})
