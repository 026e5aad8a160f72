import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { ALLOWED_UPDATES } from "../../src/telegram/Update.ts"
import { TEST_SECRET, testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

const PUBLIC_URL = "https://bot.example.test/steadfast"
const WEBHOOK_URL = `${PUBLIC_URL}/webhook`

/**
 * Starts the app on `databaseUrl` against the stand-in already in context (so the webhook it
 * remembers survives restarts, like Telegram's), waits for start-up to finish, stops it, and
 * returns the Bot API calls made meanwhile. Registration runs while the app's layers are built.
 */
const startAndStop = (databaseUrl: string, env: Record<string, string>) =>
  Effect.gen(function*() {
    const standIn = yield* BotApiRecorder
    yield* standIn.clear
    yield* Effect.provide(
      Effect.void,
      makeAppLayer().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(databaseUrl, standIn.url, env)))))
    )
    return yield* standIn.calls
  })

const setWebhookCalls = (calls: ReadonlyArray<RecordedCall>) => calls.filter((call) => call.method === "setWebhook")

describe("webhook registration", () => {
  it.live("registers PUBLIC_URL/webhook with the secret and allowed updates once, and again only when the secret changes", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("webhook_registration"))

      const first = yield* startAndStop(url, { PUBLIC_URL })
      const registered = setWebhookCalls(first)
      assert.strictEqual(registered.length, 1, JSON.stringify(first))
      assert.strictEqual(registered[0]?.params["url"], WEBHOOK_URL)
      assert.strictEqual(registered[0]?.params["secret_token"], TEST_SECRET)
      assert.sameMembers(registered[0]?.params["allowed_updates"] as Array<string>, [...ALLOWED_UPDATES])

      const second = yield* startAndStop(url, { PUBLIC_URL })
      assert.include(second.map((call) => call.method), "getWebhookInfo")
      assert.deepStrictEqual(setWebhookCalls(second), [], JSON.stringify(second))

      const rotated = yield* startAndStop(url, { PUBLIC_URL, WEBHOOK_SECRET: "rotated-secret_2" })
      const again = setWebhookCalls(rotated)
      assert.strictEqual(again.length, 1, JSON.stringify(rotated))
      assert.strictEqual(again[0]?.params["url"], WEBHOOK_URL)
      assert.strictEqual(again[0]?.params["secret_token"], "rotated-secret_2")
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("registers again when Telegram reports another URL, although the stored fingerprint matches", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("webhook_reregistration"))
      const standIn = yield* BotApiRecorder
      assert.strictEqual(setWebhookCalls(yield* startAndStop(url, { PUBLIC_URL })).length, 1)
      // Someone pointed the bot elsewhere (another deployment, a manual setWebhook).
      yield* standIn.setWebhookInfo({ url: "https://elsewhere.example.test/hook" })
      const calls = yield* startAndStop(url, { PUBLIC_URL })
      assert.deepStrictEqual(setWebhookCalls(calls).map((call) => call.params["url"]), [WEBHOOK_URL])
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("a PUBLIC_URL with a trailing slash registers a single-slash /webhook URL", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("webhook_trailing_slash"))
      const calls = yield* startAndStop(url, { PUBLIC_URL: `${PUBLIC_URL}/` })
      assert.deepStrictEqual(setWebhookCalls(calls).map((call) => call.params["url"]), [WEBHOOK_URL])
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("without PUBLIC_URL the webhook is not registered", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("webhook_no_public_url"))
      assert.deepStrictEqual(setWebhookCalls(yield* startAndStop(url, {})), [])
    }).pipe(Effect.provide(BotApiRecorder.layer())))
})
