import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import { AppConfig } from "../../src/Config.ts"
import { signOrderPayload, verifyOrderPayload } from "../../src/payments/InvoicePayload.ts"

const TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"

const loadConfig = (env: Record<string, string>) =>
  AppConfig.pipe(
    Effect.provide(AppConfig.layer),
    Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
  )

describe("invoice payload", () => {
  const secret = Redacted.make("a-test-secret-of-enough-length")

  it("round-trips an order id and fits Telegram's 128-byte payload limit", () => {
    for (const orderId of [1n, 42n, 9_223_372_036_854_775_807n]) {
      const payload = signOrderPayload(secret, orderId)
      assert.isAtMost(Buffer.byteLength(payload), 128)
      assert.deepStrictEqual(verifyOrderPayload(secret, payload), Option.some(orderId))
    }
  })

  it("rejects forged, tampered and malformed payloads", () => {
    const payload = signOrderPayload(secret, 42n)
    const mac = payload.split(".")[1]!
    const forged = [
      signOrderPayload(Redacted.make("another-secret-of-enough-length"), 42n),
      `o43.${mac}`,
      `o042.${mac}`,
      `o42.${mac.slice(0, -1)}${mac.endsWith("A") ? "B" : "A"}`,
      `o42.${mac}=`,
      `o42.${mac}x`,
      "o42",
      "",
      "credits_100",
      `o99999999999999999999.${mac}`
    ]
    for (const candidate of forged) assert.isTrue(Option.isNone(verifyOrderPayload(secret, candidate)), candidate)
  })

  it.effect("PAYMENT_SECRET when set; otherwise a key derived from the bot token; never shown", () =>
    Effect.gen(function*() {
      const base = { BOT_TOKEN: TOKEN, WEBHOOK_SECRET: "s3cret-webhook_token", DATABASE_URL: "postgres://u:p@127.0.0.1:1/db" }
      const derived = yield* loadConfig(base)
      const again = yield* loadConfig(base)
      const otherBot = yield* loadConfig({ ...base, BOT_TOKEN: "987654321:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" })
      const explicit = yield* loadConfig({ ...base, PAYMENT_SECRET: "an-explicit-payment-secret" })
      const sandbox = yield* loadConfig({ BOT_MODE: "sandbox" })
      assert.strictEqual(Redacted.value(derived.paymentSecret), Redacted.value(again.paymentSecret))
      assert.notStrictEqual(Redacted.value(derived.paymentSecret), Redacted.value(otherBot.paymentSecret))
      assert.notInclude(Redacted.value(derived.paymentSecret), TOKEN.split(":")[1]!)
      assert.strictEqual(Redacted.value(explicit.paymentSecret), "an-explicit-payment-secret")
      assert.isAtLeast(Redacted.value(sandbox.paymentSecret).length, 32)
      assert.strictEqual(String(derived.paymentSecret), "<redacted>")
      assert.notInclude(JSON.stringify(derived.paymentSecret), Redacted.value(derived.paymentSecret))

      const short = yield* Effect.flip(loadConfig({ ...base, PAYMENT_SECRET: "short" }))
      assert.strictEqual(short._tag, "InvalidConfig")
      assert.strictEqual(short.message, "PAYMENT_SECRET: must be at least 16 characters")
    }))
})
