import { Cause, Effect, Predicate, Schedule } from "effect"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"

/**
 * The database or the Bot API was away: an error that says nothing about the update. PostgreSQL
 * shutting down or starting up (SQLSTATE 57P01-57P03) reaches the driver as an unknown error.
 */
export const isInfrastructureError = (error: unknown): boolean => {
  if (typeof error !== "object" || error === null || !("_tag" in error)) return false
  if (error._tag === "PoolTimeout" || error._tag === "BotApiUnavailable") return true
  if (error._tag !== "SqlError" || !("reason" in error) || !Predicate.hasProperty(error.reason, "_tag")) return false
  if (error.reason._tag === "ConnectionError") return true
  const cause = Predicate.hasProperty(error.reason, "cause") ? error.reason.cause : undefined
  const code = Predicate.hasProperty(cause, "code") ? cause.code : undefined
  return typeof code === "string" && (code.startsWith("08") || code.startsWith("57P"))
}

// Every fiber waiting out the same outage reports to this one warning.
const bookkeepingFailed = repeatedWarning("recording work's outcome failed; retrying every second")

/**
 * Bookkeeping that must happen before a chat may go on in this instance's memory (recording a
 * failed run, returning what queued behind it) is retried while the database is away, keeping the
 * leases renewed: nothing of a chat runs here while an earlier one of it is unsettled.
 */
export const persistently = <A, E>(effect: Effect.Effect<A, E>) =>
  // The retry is set up only once the first attempt has failed: on the hot path it runs once.
  Effect.catchIf(
    effect,
    isInfrastructureError,
    (error) =>
      Effect.andThen(
        bookkeepingFailed.warn(Cause.fail(error)),
        Effect.andThen(
          Effect.sleep("1 second"),
          Effect.retry(
            Effect.tapError(effect, (error) => isInfrastructureError(error) ? bookkeepingFailed.warn(Cause.fail(error)) : Effect.void),
            {
              schedule: Schedule.spaced("1 second"),
              while: isInfrastructureError
            }
          )
        )
      ).pipe(Effect.tap(() => bookkeepingFailed.recovered))
  )
