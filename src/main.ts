import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Exit, Layer } from "effect"
import { makeAppLayer } from "./App.ts"
import { InvalidConfig } from "./Config.ts"
import { EmbeddedDatabaseError } from "./db/EmbeddedDatabase.ts"
import { BotMigrationFailed } from "./db/migrations/SqlFiles.ts"
import { Logging } from "./observability/Logging.ts"
import { Telemetry } from "./observability/Telemetry.ts"

/** A start-up refusal the operator fixes in the environment: one line, no stack, exit 1. */
const refusalOf = (cause: Cause.Cause<unknown>): string | undefined => {
  const error = cause.reasons.find(Cause.isFailReason)?.error
  if (error instanceof InvalidConfig) return `invalid configuration: ${error.message}`
  if (error instanceof EmbeddedDatabaseError) return `embedded PostgreSQL: ${error.message}`
  if (error instanceof BotMigrationFailed) return error.message
  return undefined
}

Layer.launch(makeAppLayer().pipe(Layer.provide(Telemetry.layer))).pipe(
  Effect.tapCause((cause) =>
    Cause.hasInterruptsOnly(cause) || refusalOf(cause) !== undefined ? Effect.void : Effect.logFatal("steadfast stopped", cause)
  ),
  // The loggers wrap everything, telemetry included, so even its start-up lines are formatted.
  Effect.provide(Logging.layer),
  Effect.tapCause((cause) => {
    const refusal = refusalOf(cause)
    return refusal === undefined ? Effect.void : Console.error(`steadfast: ${refusal}`)
  }),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    // A signal ends the program by interruption: that is a clean stop, not a failure, unless a
    // fatal error asked for the stop (Lifecycle sets exitCode 1 and then stops as SIGTERM does).
    teardown: (exit, onExit) =>
      onExit(Number(process.exitCode ?? 0) !== 0 ? 1 : Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  })
)
