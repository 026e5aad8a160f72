import { Cause, Context, Duration, Effect, Layer } from "effect"

/** How long a fatal error leaves the finalizers before the process exits regardless. */
export const FATAL_SHUTDOWN_BOUND = Duration.seconds(8)

/**
 * The process's view of its own shutdown. The first SIGTERM/SIGINT marks it draining at once
 * (before the runtime starts closing layers), so requests still arriving on open connections
 * get 503 + Retry-After; a second signal exits immediately.
 */
export class Lifecycle extends Context.Service<Lifecycle, {
  readonly isDraining: () => boolean
}>()("steadfast/Lifecycle") {
  static readonly layer = Layer.effect(
    Lifecycle,
    Effect.gen(function*() {
      let draining = false
      const context = yield* Effect.context<never>()
      const onSignal = (signal: NodeJS.Signals) => {
        if (draining) {
          process.stderr.write(`received ${signal} again; exiting now\n`)
          process.exit(signal === "SIGINT" ? 130 : 143)
        }
        draining = true
        Effect.runSyncWith(context)(Effect.logInfo(`${signal} received: draining, then stopping (a second signal exits at once)`))
      }
      // Last-resort diagnostics: log what escaped every Effect boundary, then stop the way SIGTERM
      // does, so the finalizers that matter run (leases returned, telemetry flushed) and a restart
      // need not wait out the leases; exit 1 all the same, and at once if that takes too long.
      let failed = false
      const onFatal = (kind: string) => (error: unknown) => {
        const run = Effect.runSyncWith(context)
        run(Effect.logFatal(`${kind}; exiting`, Cause.die(error)))
        if (failed) return
        failed = true
        process.exitCode = 1
        Effect.runForkWith(context)(
          Effect.sleep(FATAL_SHUTDOWN_BOUND).pipe(
            Effect.andThen(Effect.sync(() => {
              process.stderr.write(`shutdown after the fatal error took over ${Duration.format(FATAL_SHUTDOWN_BOUND)}; exiting now\n`)
              process.exit(1)
            }))
          )
        )
        // The runtime's own SIGTERM handler interrupts the main fiber, closing every layer.
        process.kill(process.pid, "SIGTERM")
      }
      const onUncaught = onFatal("uncaught exception")
      const onUnhandled = onFatal("unhandled promise rejection")
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.on("SIGTERM", onSignal)
          process.on("SIGINT", onSignal)
          process.on("uncaughtException", onUncaught)
          process.on("unhandledRejection", onUnhandled)
        }),
        () =>
          Effect.sync(() => {
            process.off("SIGTERM", onSignal)
            process.off("SIGINT", onSignal)
            // Kept after a fatal error: a second one while the layers close must not crash the exit.
            if (!failed) {
              process.off("uncaughtException", onUncaught)
              process.off("unhandledRejection", onUnhandled)
            }
          })
      )
      return Lifecycle.of({ isDraining: () => draining })
    })
  )

  /** A lifecycle that never drains, for tests that run routes in-process. */
  static readonly layerTest = Layer.succeed(Lifecycle, Lifecycle.of({ isDraining: () => false }))
}
