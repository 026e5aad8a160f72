import { Duration } from "effect"

/**
 * The one retry delay of the queue, for updates and for after-commit calls alike: after the n-th
 * failed attempt, `first` doubled n - 1 times, at most `cap`, with ±20% jitter so that what failed
 * together (an outage) does not come back together.
 */
export const backoff = (attempt: number, options: { readonly first: Duration.Duration; readonly cap: Duration.Duration }) => {
  const exponential = Duration.toMillis(options.first) * 2 ** Math.min(30, Math.max(0, attempt - 1))
  return Duration.millis(Math.min(exponential, Duration.toMillis(options.cap)) * (0.8 + Math.random() * 0.4))
}
