// steadfast with its fallback written as a grammY Composer instead of an Effect handler, everything
// else as src/main.ts: the benchmark's "steadfast-grammy" contender, to measure the adapter's cost.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit, Layer } from "effect"
import { makeAppLayer } from "../src/App.ts"
import { Bot } from "../src/bot/Bot.ts"
import { grammyFallback, help } from "../src/bot/handlers/Basics.ts"
import { commands } from "../src/MyBot.ts"
import { Telemetry } from "../src/observability/Telemetry.ts"

process.removeAllListeners("SIGTERM")
process.removeAllListeners("SIGINT")

Layer.launch(makeAppLayer({ bot: Bot.layerWith([...commands, help(commands), grammyFallback]) }).pipe(Layer.provide(Telemetry.layer))).pipe(
  Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logFatal("steadfast stopped", cause)),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  })
)
