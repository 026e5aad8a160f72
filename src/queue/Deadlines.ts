import { Clock, Duration, Effect, Queue, type Scope } from "effect"

/** A deadline of `makeDeadlines`: settling it before it passes means its `onExpire` never runs. */
export interface Deadline {
  readonly settle: () => void
}

/**
 * Deadlines of one fixed `timeout`, all watched by one fiber in the caller's scope: `start`
 * costs an array push, where `Effect.timeout` per call races two fibers and a timer. The fiber
 * sleeps until the oldest open deadline (sharing one timeout, they pass in the order they were
 * started) and waits for a new one when none is open. `onExpire` runs on that fiber, synchronously:
 * it must only record the expiry and wake whoever acts on it.
 */
export const makeDeadlines = (timeout: Duration.Duration): Effect.Effect<(onExpire: () => void) => Deadline, never, Scope.Scope> =>
  Effect.gen(function*() {
    const timeoutMs = Duration.toMillis(timeout)
    const clock = yield* Clock.Clock
    // Monotonic: a wall clock set forward must not expire every deadline at once.
    const nowMs = () => Number(clock.monotonicTimeNanosUnsafe() / 1_000_000n)
    type Entry = { readonly at: number; onExpire: (() => void) | undefined }
    // Oldest first; `head` is the first entry not yet passed or settled.
    let entries: Array<Entry> = []
    let head = 0
    const started = yield* Queue.sliding<void>(1)

    const dropSettled = () => {
      while (head < entries.length && entries[head]!.onExpire === undefined) head++
      if (head === entries.length) {
        entries = []
        head = 0
      } else if (head > 1024 && head * 2 > entries.length) {
        entries = entries.slice(head)
        head = 0
      }
    }

    yield* Effect.forkScoped(Effect.forever(Effect.suspend(() => {
      dropSettled()
      const oldest = entries[head]
      if (oldest === undefined) return Queue.take(started)
      const now = nowMs()
      if (oldest.at > now) return Effect.sleep(oldest.at - now)
      for (; head < entries.length && entries[head]!.at <= now; head++) {
        const entry = entries[head]!
        const onExpire = entry.onExpire
        entry.onExpire = undefined
        onExpire?.()
      }
      return Effect.void
    })))

    return (onExpire) => {
      const entry: Entry = { at: nowMs() + timeoutMs, onExpire }
      if (entries.length === head) Queue.offerUnsafe(started, undefined)
      entries.push(entry)
      return { settle: () => void (entry.onExpire = undefined) }
    }
  })
