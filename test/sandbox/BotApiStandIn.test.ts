import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Logger, Schema } from "effect"
import { BotApiStandIn, type StandInOptions } from "../../src/sandbox/BotApiStandIn.ts"
import { BotApiRecorder, type RecorderOptions } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"

const token = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

const TelegramReply = Schema.Struct({
  ok: Schema.Boolean,
  result: Schema.optional(Schema.Unknown),
  error_code: Schema.optional(Schema.Number),
  description: Schema.optional(Schema.String),
  parameters: Schema.optional(Schema.Struct({ retry_after: Schema.optional(Schema.Number) }))
})

const post = (
  apiRoot: string,
  method: string,
  body?: { readonly json: unknown } | { readonly form: string },
  query = ""
) =>
  Effect.gen(function*() {
    const init: RequestInit = body === undefined
      ? { method: "POST" }
      : "json" in body
      ? { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body.json) }
      : { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: body.form }
    const response = yield* Effect.promise((signal) => fetch(`${apiRoot}/bot${token}/${method}${query}`, { ...init, signal }))
    const json = yield* Effect.promise(() => response.json())
    return { status: response.status, body: yield* Schema.decodeUnknownEffect(TelegramReply)(json) }
  })

const withStandIn = <A, E>(
  body: (standIn: BotApiStandIn["Service"]) => Effect.Effect<A, E, BotApiStandIn>,
  options?: StandInOptions
) => Effect.flatMap(BotApiStandIn, body).pipe(Effect.provide(BotApiStandIn.layer(options)))

const withRecorder = <A, E>(
  body: (recorder: BotApiRecorder["Service"]) => Effect.Effect<A, E, BotApiRecorder>,
  options?: RecorderOptions
) => Effect.flatMap(BotApiRecorder, body).pipe(Effect.provide(BotApiRecorder.layer(options)))

describe("BotApiStandIn", () => {
  it.live("accepts JSON, form bodies and query strings, answering with the Message sent", () =>
    withStandIn((standIn) =>
      Effect.gen(function*() {
        assert.match(standIn.url, /^http:\/\/127\.0\.0\.1:\d+$/)
        const json = yield* post(standIn.url, "sendMessage", { json: { chat_id: 42, text: "Hello" } })
        const form = yield* post(standIn.url, "sendMessage", { form: "chat_id=7&text=hi%20there" })
        const query = yield* post(standIn.url, "sendMessage", undefined, "?chat_id=8&text=from%20query")
        assert.deepStrictEqual([json.status, form.status, query.status], [200, 200, 200])
        assert.deepInclude(json.body.result as object, { text: "Hello", chat: { id: 42, type: "private", first_name: "Sandbox user" } })
        assert.deepInclude(form.body.result as object, { text: "hi there", chat: { id: 7, type: "private", first_name: "Sandbox user" } })
        assert.deepInclude(query.body.result as object, {
          text: "from query",
          chat: { id: 8, type: "private", first_name: "Sandbox user" }
        })
      })
    ))

  it.live("answers any method a handler may call: a plausible result for the common ones, a generic success for the rest", () =>
    withStandIn((standIn) =>
      Effect.gen(function*() {
        const result = (method: string, json: unknown) =>
          Effect.map(post(standIn.url, method, { json }), (reply) => {
            assert.strictEqual(reply.status, 200, `${method}: ${reply.body.description}`)
            return reply.body.result as Record<string, unknown>
          })
        const photo = yield* result("sendPhoto", { chat_id: 42, photo: "AgACphoto", caption: "a cat" })
        assert.deepInclude(photo, { caption: "a cat", chat: { id: 42, type: "private", first_name: "Sandbox user" } })
        assert.strictEqual((photo["photo"] as ReadonlyArray<{ file_id: string }>)[0]?.file_id, "AgACphoto")
        const sent = photo["message_id"] as number
        const edited = yield* result("editMessageText", { chat_id: 42, message_id: sent, text: "edited" })
        assert.deepInclude(edited, { message_id: sent, text: "edited" })
        const caption = yield* result("editMessageCaption", { chat_id: 42, message_id: sent, caption: "new caption" })
        assert.deepInclude(caption, { message_id: sent, caption: "new caption" })
        assert.isTrue(yield* result("answerCallbackQuery", { callback_query_id: "q1", text: "done" }))
        assert.isTrue(yield* result("pinChatMessage", { chat_id: 42, message_id: sent }))
        assert.isTrue(yield* result("deleteMessage", { chat_id: 42, message_id: sent }))
        assert.isTrue(yield* result("setMessageReaction", { chat_id: 42, message_id: 7 }))
        assert.deepInclude(yield* result("getFile", { file_id: "AgACphoto" }), { file_id: "AgACphoto", file_path: "files/AgACphoto" })
        assert.isNumber((yield* result("copyMessage", { chat_id: 42, from_chat_id: 42, message_id: 7 }))["message_id"])
        const group = yield* result("sendMediaGroup", {
          chat_id: 42,
          media: [{ type: "photo", media: "p1" }, { type: "photo", media: "p2" }]
        })
        assert.lengthOf(group as unknown as ReadonlyArray<unknown>, 2)
        const me = yield* result("getMe", {})
        assert.strictEqual(me["username"], "steadfast_sandbox_bot")
        const noText = yield* post(standIn.url, "sendMessage", { json: { chat_id: 1 } })
        assert.strictEqual(noText.status, 400)
        assert.strictEqual(noText.body.description, "Bad Request: message text is empty")
        const noChat = yield* post(standIn.url, "sendMessage", { json: { text: "x" } })
        assert.strictEqual(noChat.body.error_code, 400)
      })
    ))

  it.live("getMe, webhooks, invoices and payment answers have the Bot API shapes", () =>
    withStandIn((standIn) =>
      Effect.gen(function*() {
        const me = yield* post(standIn.url, "getMe")
        assert.deepInclude(me.body.result as object, { id: 123456, is_bot: true, can_manage_bots: false })
        const set = yield* post(standIn.url, "setWebhook", {
          json: { url: "https://example.org/hook", secret_token: "s3cret", allowed_updates: ["message"] }
        })
        assert.strictEqual(set.body.result, true)
        const info = yield* post(standIn.url, "getWebhookInfo")
        assert.deepStrictEqual(info.body.result, {
          url: "https://example.org/hook",
          has_custom_certificate: false,
          pending_update_count: 0,
          allowed_updates: ["message"]
        })
        const deleted = yield* post(standIn.url, "deleteWebhook")
        assert.strictEqual(deleted.body.result, true)
        const invoice = yield* post(standIn.url, "sendInvoice", {
          json: {
            chat_id: 9,
            title: "Coffee",
            description: "A cup",
            payload: "order-1",
            currency: "XTR",
            prices: [{ label: "Coffee", amount: 50 }]
          }
        })
        assert.deepInclude(invoice.body.result as object, {
          invoice: { title: "Coffee", description: "A cup", start_parameter: "", currency: "XTR", total_amount: 50 }
        })
        for (
          const [method, json] of [
            ["answerPreCheckoutQuery", { pre_checkout_query_id: "q", ok: true }],
            ["refundStarPayment", { user_id: 9, telegram_payment_charge_id: "c" }],
            ["answerCallbackQuery", { callback_query_id: "cb" }]
          ] as const
        ) {
          const reply = yield* post(standIn.url, method, { json })
          assert.strictEqual(reply.body.result, true, method)
        }
        const edited = yield* post(standIn.url, "editMessageText", { json: { chat_id: 9, message_id: 1, text: "edited" } })
        assert.deepInclude(edited.body.result as object, { message_id: 1, text: "edited" })
      })
    ))

  it.live("behaves like Telegram where bots rely on it: message ids count up per chat, unknown ids and empty texts are refused", () =>
    withStandIn((standIn) =>
      Effect.gen(function*() {
        const send = (chatId: number) =>
          Effect.map(post(standIn.url, "sendMessage", { json: { chat_id: chatId, text: "hi" } }), (reply) =>
            (reply.body.result as { message_id: number }).message_id)
        assert.deepStrictEqual([yield* send(501), yield* send(501), yield* send(502)], [1, 2, 1])
        const refused = (method: string, json: unknown) =>
          Effect.map(post(standIn.url, method, { json }), (reply) => [reply.status, reply.body.description])
        assert.deepStrictEqual(yield* refused("editMessageText", { chat_id: 501, message_id: 3, text: "x" }), [
          400,
          "Bad Request: message to edit not found"
        ])
        assert.deepStrictEqual(yield* refused("deleteMessage", { chat_id: 502, message_id: 2 }), [
          400,
          "Bad Request: message to delete not found"
        ])
        assert.deepStrictEqual(yield* refused("sendMessage", { chat_id: 501, text: " " }), [400, "Bad Request: message text is empty"])
        assert.deepStrictEqual(yield* refused("deleteMessage", { chat_id: 501, message_id: 2 }), [200, undefined])
        assert.deepStrictEqual(yield* refused("deleteMessage", { chat_id: 501, message_id: 2 }), [
          400,
          "Bad Request: message to delete not found"
        ])
      })
    ))

  it.live("logs the messages the bot sends, never the token", () => {
    const lines: Array<string> = []
    const capture = Logger.layer([Logger.make((options) => {
      lines.push(Logger.formatSimple.log(options))
    })])
    return withStandIn((standIn) =>
      Effect.gen(function*() {
        yield* post(standIn.url, "sendMessage", { json: { chat_id: 42, text: "Hello" } })
        assert.isTrue(lines.some((line) => line.includes("bot → chat 42: Hello")), lines.join("\n"))
        assert.notInclude(lines.join("\n"), "ABC-DEF")
      }), { logMessages: true }).pipe(Effect.provide(capture))
  })

  it.live("a taken port fails the layer with StandInListenError", () =>
    withStandIn((standIn) =>
      Effect.gen(function*() {
        const port = Number(new URL(standIn.url).port)
        const error = yield* Effect.flip(Effect.provide(BotApiStandIn, BotApiStandIn.layer({ port })))
        assert.strictEqual(error._tag, "StandInListenError")
        assert.include(error.message, `127.0.0.1:${port}`)
      })
    ))

  it("sampleUpdate builds a message update with a bot_command entity", () => {
    const update = sampleUpdate({ updateId: 77, chatId: 5, text: "/start@steadfast_bot hello" })
    assert.strictEqual(update.update_id, 77)
    assert.deepStrictEqual(update.message.entities, [{ type: "bot_command", offset: 0, length: 20 }])
    assert.deepInclude(update.message.chat, { id: 5, type: "private" })
    assert.isUndefined(sampleUpdate({ text: "plain" }).message.entities)
  })
})

// The recorder the tests use (test/support/BotApiRecorder.ts), built on the stand-in above.
describe("BotApiRecorder", () => {
  it.live("records each call without the token, with the result the stand-in answered it with", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        const first = yield* post(recorder.url, "sendMessage", { json: { chat_id: 42, text: "Hello" } })
        const second = yield* post(recorder.url, "sendMessage", { json: { chat_id: 42, text: "Again" } })
        const calls = yield* recorder.awaitCalls((calls) => calls.length === 2 && calls.every((c) => c.result !== undefined))
        assert.deepStrictEqual(calls.map((c) => c.result), [first.body.result, second.body.result])
        assert.deepStrictEqual(calls.map((c) => [c.method, c.params]), [
          ["sendMessage", { chat_id: 42, text: "Hello" }],
          ["sendMessage", { chat_id: 42, text: "Again" }]
        ])
        assert.notInclude(JSON.stringify(calls), "ABC-DEF")
        assert.isTrue(calls.every((c) => c.at > 1_600_000_000_000))
      })
    ))

  it.live("records the parameters of form bodies and query strings", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        const form = yield* post(recorder.url, "sendMessage", { form: "chat_id=7&text=hi%20there" })
        assert.strictEqual(form.status, 200)
        const query = yield* post(recorder.url, "sendMessage", undefined, "?chat_id=8&text=from%20query")
        assert.strictEqual(query.status, 200)
        const calls = yield* recorder.calls
        assert.deepStrictEqual(calls.map((c) => c.params), [
          { chat_id: "7", text: "hi there" },
          { chat_id: "8", text: "from query" }
        ])
      })
    ))

  it.live("answers scripted responses in order, then resumes normal behaviour", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        yield* recorder.script("sendMessage", [
          {
            status: 429,
            body: { ok: false, error_code: 429, description: "Too Many Requests: retry after 3", parameters: { retry_after: 3 } }
          },
          { status: 500 },
          { status: 403, body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" } }
        ])
        const statuses: Array<number> = []
        const descriptions: Array<string | undefined> = []
        for (const i of [0, 1, 2, 3]) {
          const reply = yield* post(recorder.url, "sendMessage", { json: { chat_id: 1, text: `n${i}` } })
          statuses.push(reply.status)
          descriptions.push(reply.body.description)
        }
        assert.deepStrictEqual(statuses, [429, 500, 403, 200])
        assert.deepStrictEqual(descriptions, [
          "Too Many Requests: retry after 3",
          "Internal Server Error",
          "Forbidden: bot was blocked by the user",
          undefined
        ])
        const other = yield* post(recorder.url, "getMe")
        assert.strictEqual(other.status, 200)
      })
    ))

  it.live("a delayed answer does not hold up other requests", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        yield* recorder.script("sendMessage", [{ status: 200, body: { ok: true, result: true }, delayMs: 10_000 }])
        const slow = yield* Effect.forkChild(post(recorder.url, "sendMessage", { json: { chat_id: 1, text: "slow" } }))
        yield* recorder.awaitCalls((calls) => calls.length === 1)
        const [elapsed, fast] = yield* Effect.timed(post(recorder.url, "getMe"))
        assert.strictEqual(fast.status, 200)
        assert.isBelow(Duration.toMillis(elapsed), 5_000)
        yield* Fiber.interrupt(slow)
        // The client gave up on the slow request, which the stand-in notices.
        const aborted = yield* recorder.awaitAborted((a) => a.length === 1)
        assert.strictEqual(aborted[0]?.method, "sendMessage")
      })
    ))

  it.live("setDelay makes every call but getMe wait", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        yield* recorder.setDelay(300)
        const [elapsed] = yield* Effect.timed(post(recorder.url, "sendMessage", { json: { chat_id: 1, text: "slow" } }))
        assert.isAtLeast(Duration.toMillis(elapsed), 290)
        // The service asks getMe once at start: a delay models slow deliveries, not a slow start.
        yield* recorder.setDelay(60_000)
        const me = yield* post(recorder.url, "getMe").pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(me.status, 200)
        yield* recorder.setDelay(0)
      })
    ))

  it.live("awaitCalls fails with StandInTimeout summarising the calls seen", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        yield* post(recorder.url, "getMe")
        yield* post(recorder.url, "getMe")
        const error = yield* Effect.flip(recorder.awaitCalls((calls) => calls.some((c) => c.method === "sendMessage"), "200 millis"))
        assert.strictEqual(error._tag, "StandInTimeout")
        assert.include(error.message, "2 calls (getMe x2)")
        yield* recorder.clear
        assert.deepStrictEqual(yield* recorder.calls, [])
      })
    ))

  it.live("keeps only the last maxCalls calls, oldest first", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        for (const i of [1, 2, 3, 4, 5]) yield* post(recorder.url, "sendMessage", { json: { chat_id: 1, text: `m${i}` } })
        const calls = yield* recorder.awaitCalls((calls) => calls.at(-1)?.params["text"] === "m5")
        assert.deepStrictEqual(calls.map((call) => call.params["text"]), ["m3", "m4", "m5"])
      }), { maxCalls: 3 }))

  it.live("setWebhookInfo overrides fields of the stand-in's own getWebhookInfo answer", () =>
    withRecorder((recorder) =>
      Effect.gen(function*() {
        yield* post(recorder.url, "setWebhook", { json: { url: "https://example.org/hook", allowed_updates: ["message"] } })
        yield* recorder.setWebhookInfo({ pending_update_count: 5, last_error_date: 1700000000, last_error_message: "Connection refused" })
        const info = yield* post(recorder.url, "getWebhookInfo")
        assert.deepStrictEqual(info.body.result, {
          url: "https://example.org/hook",
          has_custom_certificate: false,
          pending_update_count: 5,
          allowed_updates: ["message"],
          last_error_date: 1700000000,
          last_error_message: "Connection refused"
        })
      })
    ))
})
