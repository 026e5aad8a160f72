import { Cause, Context, Effect, Layer } from "effect"

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
      // Last-resort diagnostics: log what escaped every Effect boundary, then exit non-zero.
      const onFatal = (kind: string) => (error: unknown) => {
        Effect.runSyncWith(context)(Effect.logFatal(`${kind}; exiting`, Cause.die(error)))
        process.exit(1)
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
            process.off("uncaughtException", onUncaught)
            process.off("unhandledRejection", onUnhandled)
          })
      )
      return Lifecycle.of({ isDraining: () => draining })
    })
  )

  /** A lifecycle that never drains, for tests that run routes in-process. */
  static readonly layerTest = Layer.succeed(Lifecycle, Lifecycle.of({ isDraining: () => false }))
}
