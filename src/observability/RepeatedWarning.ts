import { Cause, Clock, Context, Duration, Effect, Predicate } from "effect"

/** How long later occurrences of a repeated warning are only counted before the count is logged. */
export const RepeatedWarningInterval = Context.Reference<Duration.Duration>("steadfast/observability/RepeatedWarningInterval", {
  defaultValue: () => Duration.seconds(10)
})

/**
 * What failed, in one line: the innermost message of the error's `cause` chain (for a failed query
 * the driver's words, "connect ECONNREFUSED …", not the generic "Query failed") after its tag.
 */
export const describeCause = (cause: Cause.Cause<unknown>): string => {
  if (Cause.hasInterruptsOnly(cause)) return "interrupted"
  const error = Cause.squash(cause)
  const tag = Predicate.hasProperty(error, "reason") && Predicate.hasProperty(error.reason, "_tag")
    ? String(error.reason._tag)
    : Predicate.hasProperty(error, "_tag")
    ? String(error._tag)
    : error instanceof Error
    ? error.name
    : "Error"
  let message = error instanceof Error ? error.message : String(error)
  let current: unknown = Predicate.hasProperty(error, "reason") ? error.reason : error
  for (let depth = 0; depth < 5 && Predicate.hasProperty(current, "cause"); depth++) {
    current = current.cause
    if (current instanceof Error && current.message !== "") message = current.message
  }
  return `${tag}: ${message}`
}

export interface RepeatedWarning {
  /**
   * One occurrence: the first is a warning, later ones within the interval are counted; the full
   * cause is at debug. `detail` replaces the one-line reason taken from the cause.
   */
  readonly warn: (cause: Cause.Cause<unknown>, detail?: string) => Effect.Effect<void>
  /** It works again: says so (with the count not yet logged) if a warning was logged; free otherwise. */
  readonly recovered: Effect.Effect<void>
}

/**
 * A warning for an infrastructure failure that repeats for as long as the fault lasts (PostgreSQL
 * down: every loop fails every second). An operator needs to see that it started, that it goes on
 * and when it ended, not a stack trace per attempt: so the first occurrence is logged with a
 * one-line reason, then one line per interval with the count, then "recovered". Shared by every
 * fiber that reports the same failure; no fiber or timer of its own (a summary is due at the next
 * occurrence after the interval, or at recovery). A caller that cannot afford to report recovery
 * (a hot path) may leave it out: two quiet intervals end the episode, and the next failure is a
 * first occurrence again.
 */
export const repeatedWarning = (message: string): RepeatedWarning => {
  let since: number | undefined
  let loggedAt = 0
  let lastAt = 0
  let unlogged = 0
  let total = 0
  return {
    warn: (cause, detail) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const interval = Duration.toMillis(yield* RepeatedWarningInterval)
        const reason = detail ?? describeCause(cause)
        yield* Effect.logDebug(message, cause)
        if (since !== undefined && now - lastAt > 2 * interval) since = undefined
        lastAt = now
        if (since === undefined) {
          const before = unlogged
          since = now
          loggedAt = now
          unlogged = 0
          total = 1
          return yield* Effect.logWarning(
            `${message}: ${reason}${before > 0 ? ` (${before} more time${before === 1 ? "" : "s"} before)` : ""}`
          )
        }
        total++
        unlogged++
        if (now - loggedAt < interval) return
        const count = unlogged
        loggedAt = now
        unlogged = 0
        yield* Effect.logWarning(
          `${message}: ${count} more time${count === 1 ? "" : "s"} in the last ${
            Duration.format(Duration.millis(interval))
          }, failing since ${Math.round((now - since) / 1000)} s; latest: ${reason}`
        )
      }),
    recovered: Effect.suspend(() => {
      if (since === undefined) return Effect.void
      const started = since
      const failures = total
      since = undefined
      total = 0
      unlogged = 0
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.logInfo(
          `${message}: recovered after ${Math.round((now - started) / 1000)} s and ${failures} failure${failures === 1 ? "" : "s"}`
        ))
    })
  }
}
