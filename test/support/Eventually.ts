// The test kit's one "wait until": for conditions nothing notifies a test about (a row's status,
// a pool count, a log line). Waits on state, never a fixed sleep.
import { Duration, Effect } from "effect"

/**
 * Re-runs `check` every `interval` (50 ms) until `done` holds for its value and returns that
 * value; dies with the last value seen when `timeout` (15 s) passes.
 */
export const eventually = <A, E, R>(
  what: string,
  check: Effect.Effect<A, E, R>,
  done: (value: A) => boolean,
  options: { readonly timeout?: Duration.Input; readonly interval?: Duration.Input } = {}
): Effect.Effect<A, E, R> => {
  const timeout = options.timeout ?? "15 seconds"
  let last: { value: A } | undefined
  const loop = Effect.gen(function*() {
    while (true) {
      const value = yield* check
      last = { value }
      if (done(value)) return value
      yield* Effect.sleep(options.interval ?? "50 millis")
    }
  })
  return loop.pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.die(
          new Error(
            `${what}: not reached within ${Duration.format(Duration.fromInputUnsafe(timeout))}; last seen ${
              JSON.stringify(last?.value, (_, v) => typeof v === "bigint" ? String(v) : v)
            }`
          )
        )
    })
  )
}
