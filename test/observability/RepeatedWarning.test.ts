import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Layer, Logger, References } from "effect"
import { RepeatedWarningInterval } from "../../src/observability/RepeatedWarning.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { makeLogCapture } from "../support/FaultyApp.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"

const INTERVAL = Duration.seconds(2)

/** What a warning is about: its text before the first colon (the reason and counts follow it). */
const source = (message: string) => message.split(":")[0] ?? message

describe("logs during a PostgreSQL outage", () => {
  it.live(
    "each repeated failure is logged once, then once per interval with a count, without a stack trace; the stacks are at debug; recovery is logged",
    () =>
      Effect.gen(function*() {
        const cluster = yield* Effect.acquireRelease(Effect.promise(() => startCluster()), (cluster) =>
          Effect.promise(() => cluster.dispose()))
        const databaseUrl = yield* Effect.promise(() =>
          createDatabase(cluster.url("postgres"), "repeated_warnings")
        )
        const logs = makeLogCapture()
        const app = yield* Layer.build(
          testAppLayer({ databaseUrl, env: { SHUTDOWN_GRACE_MS: "200" } }).pipe(
            Layer.provide(Logger.layer([logs.logger])),
            Layer.provide(Layer.succeed(References.MinimumLogLevel, "Debug")),
            Layer.provide(Layer.succeed(RepeatedWarningInterval, INTERVAL))
          )
        )
        const standIn = Context.get(app, BotApiRecorder)
        const base = yield* Effect.provideContext(baseUrl, app)
        // Running before the outage: an update answered.
        assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 97_001, chatId: 9_700, text: "before" }))).status, 200)
        yield* standIn.awaitCalls((calls) => calls.some((call) => String(call.params["text"] ?? "").includes("before")), "30 seconds")

        const from = logs.entries.length
        const stoppedAt = yield* Clock.currentTimeMillis
        yield* Effect.promise(() => cluster.stop())
        // Two summaries of the claim loop's failure: the outage has lasted more than two intervals.
        yield* logs.await(
          "a second summary of the failing claims",
          (log) =>
            log.level === "Warn" && /^claiming updates failed; retrying: \d+ more times? in the last/.test(log.message) &&
            logs.entries.slice(from).filter((other) =>
                other.message.startsWith("claiming updates failed; retrying: ") && /more time/.test(other.message)
              ).length >= 2,
          "60 seconds"
        )
        const elapsedMs = (yield* Clock.currentTimeMillis) - stoppedAt
        const during = logs.entries.slice(from)
        const warnings = during.filter((log) => log.level === "Warn")
        assert.isNotEmpty(warnings)
        for (const warning of warnings) {
          assert.strictEqual(warning.cause, "", `a warning carries no stack trace: ${warning.message}`)
          assert.notInclude(warning.message, "\n    at ", warning.message)
        }
        // Per source: the first line, then at most one per interval (and one more for a boundary).
        const bound = 2 + Math.floor(elapsedMs / Duration.toMillis(INTERVAL))
        const counts = new Map<string, number>()
        for (const warning of warnings) counts.set(source(warning.message), (counts.get(source(warning.message)) ?? 0) + 1)
        for (const [what, count] of counts) assert.isAtMost(count, bound, `"${what}" logged ${count} times in ${elapsedMs} ms`)
        // The first says what failed, in the driver's words.
        const first = warnings.find((log) => log.message.startsWith("claiming updates failed; retrying: "))
        assert.match(first?.message ?? "", /^claiming updates failed; retrying: \w+: .+/)
        // The stack traces are still there, at debug.
        assert.isTrue(
          during.some((log) =>
            log.level === "Debug" && log.message === "claiming updates failed; retrying" && log.cause.includes("    at ")
          )
        )

        yield* Effect.promise(() => cluster.start())
        const recovered = yield* logs.await(
          "the claim loop's recovery",
          (log) => log.level === "Info" && log.message.startsWith("claiming updates failed; retrying: recovered after"),
          "60 seconds"
        )
        assert.match(recovered.message, /recovered after \d+ s and \d+ failures?$/)
      }),
    150_000
  )
})
