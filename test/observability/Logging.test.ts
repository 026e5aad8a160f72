// Log lines: their JSON shape and level filter in-process, and what the real process prints.
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Schema } from "effect"
import { TestConsole } from "effect/testing"
import { Logging } from "../../src/observability/Logging.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_SECRET, TEST_TOKEN, testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"
import { postStatus } from "../support/TestHttp.ts"

const Line = Schema.Struct({
  time: Schema.String,
  level: Schema.String,
  message: Schema.Unknown,
  trace_id: Schema.optional(Schema.String),
  span_id: Schema.optional(Schema.String),
  update_id: Schema.optional(Schema.Unknown),
  method: Schema.optional(Schema.String),
  chat: Schema.optional(Schema.String),
  kind: Schema.optional(Schema.String),
  outcome: Schema.optional(Schema.String),
  duration_ms: Schema.optional(Schema.Number)
})
type Line = typeof Line.Type
const decodeJsonLine = Schema.decodeUnknownSync(Schema.fromJsonString(Line))
const decodeLine = (line: string): Line => decodeJsonLine(line)

/** Runs `effect` with the loggers `env` configures and returns the lines they printed. */
const printed = <E>(env: Record<string, string>, effect: Effect.Effect<void, E>) =>
  Effect.gen(function*() {
    // Layers are memoized within a test, so the console may hold lines of an earlier call.
    const before = (yield* TestConsole.logLines).length
    yield* Effect.provide(effect, Logging.layer)
    return (yield* TestConsole.logLines).slice(before).map(String)
  }).pipe(
    Effect.provide(Layer.merge(TestConsole.layer, ConfigProvider.layer(ConfigProvider.fromUnknown(env))))
  )

describe("log lines", () => {
  it.effect("LOG_FORMAT=json: one JSON object per line with time, level and message; inside a span also trace_id and span_id", () =>
    Effect.gen(function*() {
      const lines = yield* printed(
        { LOG_FORMAT: "json" },
        Effect.gen(function*() {
          yield* Effect.logInfo("outside any span")
          yield* Effect.logWarning("about an update\nover two lines").pipe(
            Effect.annotateLogs({ update_id: 42 }),
            Effect.withSpan("process inbox")
          )
        })
      )
      assert.strictEqual(lines.length, 2)
      for (const line of lines) assert.notInclude(line, "\n", "one line per event")
      const [outside, inside] = lines.map(decodeLine) as [Line, Line]
      assert.strictEqual(outside.level, "info")
      assert.strictEqual(outside.message, "outside any span")
      assert.isFalse(Number.isNaN(Date.parse(outside.time)))
      assert.isUndefined(outside.trace_id)
      assert.strictEqual(inside.level, "warn")
      assert.match(inside.trace_id ?? "", /^[0-9a-f]{32}$/)
      assert.match(inside.span_id ?? "", /^[0-9a-f]{16}$/)
      assert.strictEqual(inside.update_id, 42)
    }))

  it.effect("LOG_LEVEL drops the lines below it; the default is info", () =>
    Effect.gen(function*() {
      const everyLevel = Effect.gen(function*() {
        yield* Effect.logDebug("debug line")
        yield* Effect.logInfo("info line")
        yield* Effect.logWarning("warn line")
        yield* Effect.logError("error line")
      })
      const messages = (lines: ReadonlyArray<string>) => lines.map((line) => decodeLine(line).message)
      assert.deepStrictEqual(messages(yield* printed({ LOG_FORMAT: "json", LOG_LEVEL: "warn" }, everyLevel)), ["warn line", "error line"])
      assert.deepStrictEqual(messages(yield* printed({ LOG_FORMAT: "json", LOG_LEVEL: "DEBUG" }, everyLevel)), [
        "debug line",
        "info line",
        "warn line",
        "error line"
      ])
      assert.deepStrictEqual(messages(yield* printed({ LOG_FORMAT: "json" }, everyLevel)), ["info line", "warn line", "error line"])
    }))

  it.effect("an unknown LOG_LEVEL or LOG_FORMAT is refused, naming the variable", () =>
    Effect.gen(function*() {
      const level = yield* Effect.flip(printed({ LOG_LEVEL: "verbose" }, Effect.void))
      assert.strictEqual(level.variable, "LOG_LEVEL")
      const format = yield* Effect.flip(printed({ LOG_FORMAT: "xml" }, Effect.void))
      assert.strictEqual(format.variable, "LOG_FORMAT")
    }))
})

describe("the running service's log", () => {
  it.live(
    "without a terminal every line is JSON; a processing line carries trace_id, span_id and update_id; a refused call is a warning; no token anywhere",
    () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const databaseUrl = yield* Effect.promise(() => freshDatabase("logging"))
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url))

        // A `message` without a chat: dead-lettered at once, logged inside the update's processing span.
        assert.strictEqual(yield* postStatus(service.baseUrl, `{"update_id":7001,"message":{"message_id":1,"text":"/start"}}`), 200)
        yield* service.waitForOutput(/update 7001 dead-lettered/)

        yield* standIn.script("sendMessage", [{
          status: 403,
          body: { ok: false, error_code: 403, description: "Forbidden: bot was blocked by the user" }
        }])
        const update = JSON.stringify(sampleUpdate({ updateId: 7002, chatId: 5550701, text: "/start" }))
        assert.strictEqual(yield* postStatus(service.baseUrl, update), 200)
        yield* service.waitForOutput(/update 7002 skipped: the chat refuses the bot/)

        yield* service.kill("SIGTERM")
        yield* service.exited
        const output = yield* service.output
        assert.notInclude(output, TEST_TOKEN.split(":")[1]!)
        assert.notInclude(output, TEST_SECRET)
        const lines = output.split("\n").filter((line) => line.trim() !== "").map(decodeLine)
        assert.isTrue(lines.some((line) => line.message === `Listening on http://127.0.0.1:${new URL(service.baseUrl).port}`))

        const dead = lines.find((line) => String(line.message).startsWith("update 7001 dead-lettered"))
        assert.strictEqual(dead?.level, "error")
        assert.strictEqual(dead?.update_id, 7001)
        assert.match(dead?.trace_id ?? "", /^[0-9a-f]{32}$/)
        assert.match(dead?.span_id ?? "", /^[0-9a-f]{16}$/)

        const refused = lines.find((line) => String(line.message).includes("the chat refuses the bot"))
        assert.strictEqual(refused?.level, "warn")
        assert.strictEqual(refused?.method, "sendMessage")
        assert.strictEqual(refused?.chat, "chat:5550701")
        assert.include(String(refused?.message), "Forbidden: bot was blocked by the user")
        assert.match(refused?.trace_id ?? "", /^[0-9a-f]{32}$/)
      }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer()))
  )

  it.live("at debug, one line per processed update (kind, chat, outcome, duration, trace id); SIGTERM logs what it drained and handed back", () =>
    Effect.gen(function*() {
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("logging_debug"))
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url, { LOG_LEVEL: "debug" }))
      assert.strictEqual(
        yield* postStatus(service.baseUrl, JSON.stringify(sampleUpdate({ updateId: 7101, chatId: 5550711, text: "hi" }))),
        200
      )
      yield* service.waitForOutput(/"message":"update 7101 done"/)
      yield* service.kill("SIGTERM")
      yield* service.exited
      const lines = (yield* service.output).split("\n").filter((line) => line.trim() !== "").map(decodeLine)
      const processed = lines.find((line) => line.message === "update 7101 done")
      assert.strictEqual(processed?.level, "debug")
      assert.strictEqual(processed?.update_id, 7101)
      assert.strictEqual(processed?.kind, "message")
      assert.strictEqual(processed?.chat, "chat:5550711")
      assert.strictEqual(processed?.outcome, "done")
      assert.isNumber(processed?.duration_ms)
      assert.match(processed?.trace_id ?? "", /^[0-9a-f]{32}$/)
      assert.isTrue(lines.some((line) => line.message === "shutdown: every running update finished"))
      assert.isTrue(lines.some((line) => String(line.message).startsWith("shutdown: 0 queued update(s) handed back")))
    }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer())))
})
