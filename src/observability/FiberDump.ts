import { Context, Effect, Fiber, Layer } from "effect"

/** What a running fiber is doing: its open spans (innermost first) and its Effect.fn stack. */
export const describeFiber = (fiber: Fiber.Fiber<unknown, unknown>): string => {
  const spans: Array<string> = []
  let span = fiber.cache.span
  while (span !== undefined && span._tag === "Span" && spans.length < 20) {
    spans.push(span.name)
    span = span.parent._tag === "Some" ? span.parent.value : undefined
  }
  const frames: Array<string> = []
  let frame = fiber.cache.stackFrame
  while (frame !== undefined && frames.length < 20) {
    const location = /\((.*)\)/.exec(frame.stack() ?? "")?.[1]
    frames.push(`    at ${frame.name}${location === undefined ? "" : ` (${location})`}`)
    frame = frame.parent
  }
  return [`  spans: ${spans.length === 0 ? "(none)" : spans.join(" < ")}`, ...frames].join("\n")
}

/**
 * Running fibers worth a look when something hangs: update workers, senders, loops. SIGUSR2
 * logs all of them with their spans and stacks, without stopping anything.
 */
export class FiberDump extends Context.Service<FiberDump, {
  /** Runs `effect` with its fiber listed under `label` until it ends. */
  readonly track: (label: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  readonly dump: Effect.Effect<string>
}>()("steadfast/observability/FiberDump") {
  static readonly layer = Layer.effect(
    FiberDump,
    Effect.gen(function*() {
      const running = new Map<Fiber.Fiber<unknown, unknown>, { readonly label: string; readonly since: number }>()

      const dump = Effect.sync(() => {
        const now = Date.now()
        const entries = [...running.entries()].map(([fiber, { label, since }]) =>
          `fiber #${fiber.id} ${label}, running for ${now - since} ms\n${describeFiber(fiber)}`
        )
        return `fiber dump: ${entries.length} tracked fiber(s)\n${entries.join("\n")}`
      })

      const context = yield* Effect.context<never>()
      const onSignal = () => Effect.runForkWith(context)(Effect.flatMap(dump, (text) => Effect.logInfo(text)))
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("SIGUSR2", onSignal)),
        () => Effect.sync(() => process.off("SIGUSR2", onSignal))
      )

      return FiberDump.of({
        track: (label) => (effect) =>
          Effect.withFiber((fiber) => {
            running.set(fiber, { label, since: Date.now() })
            return Effect.ensuring(effect, Effect.sync(() => running.delete(fiber)))
          }),
        dump
      })
    })
  )
}
