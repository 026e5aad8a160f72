import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Effect, Fiber, Logger, Redacted } from "effect"
import { InputFile } from "grammy"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { BotApi, type BotApiError, redactToken } from "../../src/telegram/BotApi.ts"

const token = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

const tooManyRequests = {
  status: 429,
  body: { ok: false, error_code: 429, description: "Too Many Requests: retry after 1", parameters: { retry_after: 1 } }
}

/** Runs `body` with a fresh stand-in and a BotApi client pointed at it. */
const withBotApi = <A, E>(
  body: (botApi: BotApi["Service"], standIn: BotApiRecorder["Service"]) => Effect.Effect<A, E>,
  options: { readonly callTimeout?: Duration.Input; readonly maxRetries?: number } = {}
) =>
  Effect.gen(function*() {
    const standIn = yield* BotApiRecorder
    const botApi = yield* BotApi.make({ token: Redacted.make(token), apiRoot: standIn.url, ...options })
    return yield* body(botApi, standIn)
  }).pipe(Effect.provide(BotApiRecorder.layer()))

const assertNoToken = (error: BotApiError | Error) => {
  for (const text of [String(error), error.message, JSON.stringify(error), Cause.pretty(Cause.fail(error))]) {
    assert.notInclude(text, token)
    assert.notInclude(text, "ABC-DEF1234ghIkl")
    assert.notInclude(text, encodeURIComponent(token))
  }
}

/** A one-off Bot API that records the raw body of each request and answers `{ ok: true, result: true }`. */
const recordingApi = Effect.acquireRelease(
  Effect.callback<
    { readonly url: string; readonly bodies: Array<{ readonly type: string; readonly body: string }>; readonly server: Server }
  >(
    (resume) => {
      const bodies: Array<{ readonly type: string; readonly body: string }> = []
      const server = createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          bodies.push({ type: req.headers["content-type"] ?? "", body: Buffer.concat(chunks).toString("utf8") })
          res.setHeader("content-type", "application/json")
          res.end(JSON.stringify({ ok: true, result: true }))
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, bodies, server }))
      })
    }
  ),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

describe("BotApi", () => {
  it.live("a file upload (grammY's InputFile) goes out as multipart/form-data with the file's bytes", () =>
    Effect.scoped(Effect.gen(function*() {
      const api = yield* recordingApi
      const botApi = yield* BotApi.make({ token: Redacted.make(token), apiRoot: api.url })
      const sent = yield* botApi.call("sendDocument", { chat_id: 7, document: new InputFile(Buffer.from("file body 42"), "notes.txt") })
      assert.strictEqual(sent as unknown, true)
      assert.strictEqual(api.bodies.length, 1)
      assert.match(api.bodies[0]!.type, /^multipart\/form-data; boundary=/)
      assert.include(api.bodies[0]!.body, "file body 42")
      assert.include(api.bodies[0]!.body, "notes.txt")
    })))

  it.live("sendMessage reaches the Bot API and returns the sent Message", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        const message = yield* botApi.sendMessage(42, "Hello", { parse_mode: "HTML" })
        assert.strictEqual(message.text, "Hello")
        assert.strictEqual(message.chat.id, 42)
        const big = yield* botApi.sendMessage(43n, "From a bigint")
        assert.strictEqual(big.chat.id, 43)
        const calls = yield* standIn.calls
        assert.deepStrictEqual(calls.map((c) => [c.method, c.params]), [
          ["sendMessage", { parse_mode: "HTML", chat_id: 42, text: "Hello" }],
          ["sendMessage", { chat_id: 43, text: "From a bigint" }]
        ])
      })
    ))

  it.live("methods without parameters and methods named at run time work", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        const me = yield* botApi.call("getMe")
        assert.strictEqual(me.id, 123456)
        assert.strictEqual(me.username, "steadfast_sandbox_bot")
        const raw = yield* botApi.callRaw("sendMessage", { chat_id: 7, text: "from the outbox" })
        assert.deepInclude(raw as object, { text: "from the outbox" })
        const unknown = yield* Effect.flip(botApi.callRaw("sendTelepathy", {}))
        assert.strictEqual(unknown._tag, "BotApiRejected")
        assert.deepStrictEqual((yield* standIn.calls).map((c) => c.method), ["getMe", "sendMessage", "sendTelepathy"])
      })
    ))

  it.live("a 429 waits exactly retry_after seconds, then succeeds", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.script("sendMessage", [tooManyRequests])
        const [elapsed, message] = yield* Effect.timed(botApi.sendMessage(42, "after the flood wait"))
        assert.strictEqual(message.text, "after the flood wait")
        assert.isAtLeast(Duration.toMillis(elapsed), 1000)
        assert.isBelow(Duration.toMillis(elapsed), 2000)
        const calls = yield* standIn.calls
        assert.strictEqual(calls.length, 2)
        assert.isAtLeast((calls[1]?.at ?? 0) - (calls[0]?.at ?? 0), 1000)
      })
    ))

  it.live("a 500 twice is retried with backoff, then succeeds", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.script("sendMessage", [{ status: 500 }, { status: 500 }])
        const message = yield* botApi.sendMessage(42, "third time lucky")
        assert.strictEqual(message.text, "third time lucky")
        assert.strictEqual((yield* standIn.calls).length, 3)
      })
    ))

  it.live("a 403 is ChatBlocked and is not retried", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.script("sendMessage", [{
          status: 403,
          body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" }
        }])
        const error = yield* Effect.flip(botApi.sendMessage(42, "hello?"))
        assert.strictEqual(error._tag, "ChatBlocked")
        assert.deepInclude(error, { method: "sendMessage", chatId: 42, description: "Forbidden: bot was blocked by the user" })
        assert.strictEqual((yield* standIn.calls).length, 1)
      })
    ))

  it.live("a 400 is BotApiRejected and is not retried", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(botApi.sendMessage(42, ""))
        assert.strictEqual(error._tag, "BotApiRejected")
        assert.deepInclude(error, { method: "sendMessage", errorCode: 400, description: "Bad Request: message text is empty" })
        assert.strictEqual((yield* standIn.calls).length, 1)
      })
    ))

  it.live("a call that outlives callTimeout is aborted, retried, then BotApiUnavailable", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.setDelay(5_000)
        const error = yield* Effect.flip(botApi.sendMessage(42, "slow"))
        assert.strictEqual(error._tag, "BotApiUnavailable")
        assert.include(error.message, "timed out after 0.3 seconds")
        assert.strictEqual((yield* standIn.calls).length, 2)
        // Both attempts hung up on the stand-in instead of leaving the request running.
        yield* standIn.awaitAborted((aborted) => aborted.length === 2)
      }), { callTimeout: "300 millis", maxRetries: 1 }))

  it.live("interrupting a call aborts its HTTP request", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.setDelay(10_000)
        const fiber = yield* Effect.forkChild(botApi.sendMessage(42, "never mind"))
        yield* standIn.awaitCalls((calls) => calls.length === 1)
        yield* Fiber.interrupt(fiber)
        const aborted = yield* standIn.awaitAborted((a) => a.length === 1)
        assert.strictEqual(aborted[0]?.method, "sendMessage")
      })
    ))

  it.live("retries exhausted on 5xx become BotApiUnavailable", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* standIn.script("sendMessage", [{ status: 502 }, { status: 500 }, { status: 500 }, { status: 200 }])
        const error = yield* Effect.flip(botApi.sendMessage(42, "down"))
        assert.strictEqual(error._tag, "BotApiUnavailable")
        assert.deepInclude(error, { method: "sendMessage", reason: "500: Internal Server Error" })
        assert.strictEqual((yield* standIn.calls).length, 3)
      }), { maxRetries: 2 }))

  it.live("no error or log line carries the token", () => {
    const lines: Array<string> = []
    const capture = Logger.layer([Logger.make((options) => {
      lines.push(Logger.formatSimple.log(options))
    })])
    return Effect.gen(function*() {
      const errors: Array<BotApiError> = []
      yield* withBotApi((botApi, standIn) =>
        Effect.gen(function*() {
          yield* standIn.script("sendMessage", [
            { status: 403, body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" } },
            { status: 401, body: { ok: false, error_code: 401, description: "Unauthorized" } },
            { status: 500 },
            { status: 502, body: "<html>502 Bad Gateway</html>" }
          ])
          errors.push(yield* Effect.flip(botApi.sendMessage(1, "a")))
          errors.push(yield* Effect.flip(botApi.sendMessage(1, "b")))
          errors.push(yield* Effect.flip(botApi.sendMessage(1, "c")))
        }), { maxRetries: 1 })
      // Nothing listens on port 1: the transport error names the full URL, token included.
      const offline = yield* BotApi.make({ token: Redacted.make(token), apiRoot: "http://127.0.0.1:1", maxRetries: 1 })
      const network = yield* Effect.flip(offline.call("getMe"))
      errors.push(network)
      assert.deepStrictEqual(errors.map((e) => e._tag), ["ChatBlocked", "BotApiRejected", "BotApiUnavailable", "BotApiUnavailable"])
      assert.include(network.message, "http://127.0.0.1:1 failed")
      assert.notInclude(network.message, "/bot")
      errors.forEach(assertNoToken)
      assert.isNotEmpty(lines)
      assert.notInclude(lines.join("\n"), "ABC-DEF1234ghIkl")
    }).pipe(Effect.provide(capture))
  })

  it.live("getWebhookInfo returns what the stand-in was told, setWebhook is recorded", () =>
    withBotApi((botApi, standIn) =>
      Effect.gen(function*() {
        yield* botApi.setWebhook("https://example.org/telegram", { secret_token: "s3cret", allowed_updates: ["message"] })
        yield* standIn.setWebhookInfo({
          pending_update_count: 3,
          last_error_date: 1700000000,
          last_error_message: "Wrong response from the webhook: 503 Service Unavailable"
        })
        const info = yield* botApi.getWebhookInfo()
        assert.deepStrictEqual(info, {
          url: "https://example.org/telegram",
          has_custom_certificate: false,
          pending_update_count: 3,
          allowed_updates: ["message"],
          last_error_date: 1700000000,
          last_error_message: "Wrong response from the webhook: 503 Service Unavailable"
        })
        const setCall = (yield* standIn.calls).find((c) => c.method === "setWebhook")
        assert.deepStrictEqual(setCall?.params, {
          secret_token: "s3cret",
          allowed_updates: ["message"],
          url: "https://example.org/telegram"
        })
      })
    ))

  it("redactToken reduces URLs to scheme and host and scrubs the token wherever it stands", () => {
    assert.strictEqual(
      redactToken(`request to http://user:pass@127.0.0.1:1/bot${token}/getMe failed`, token),
      "request to http://127.0.0.1:1 failed"
    )
    assert.strictEqual(redactToken(`token ${token} leaked`, token), "token <redacted> leaked")
    assert.strictEqual(redactToken("https://api.telegram.org/bot999:other/sendMessage", token), "https://api.telegram.org")
    assert.strictEqual(redactToken("path /bot999:other/sendMessage quoted alone", token), "path /bot<redacted>/sendMessage quoted alone")
  })
})
