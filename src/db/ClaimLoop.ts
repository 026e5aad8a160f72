import { Effect, type Semaphore } from "effect"
import { pollInterval, type Wakeup } from "./Notifications.ts"

/**
 * The recovery path shared by the dispatcher and the sender: claims what nobody holds (backlogs,
 * retries, expired leases) from the table, at most as much as there are free slots, taken before
 * claiming so that everything claimed can start. Claiming and placing the claimed items are not
 * interrupted in between: a claimed row is always placed (started, or queued behind its chat) by
 * the time shutdown can stop the loop. A full batch means more may be waiting: claim again at once;
 * otherwise wait for a wake-up or the poll interval.
 */
export const claimLoop = <A>(options: {
  readonly concurrency: number
  readonly slots: Semaphore.Semaphore
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<A>>
  /** Starts `item` in one of the slots taken (true), or queues it behind its chat (false). */
  readonly place: (item: A) => Effect.Effect<boolean>
  readonly wakeup: Wakeup
  /** Told whether the loop last found no free slot: only then should a freed slot wake it. */
  readonly starved: (starved: boolean) => void
}): Effect.Effect<never> =>
  Effect.forever(Effect.gen(function*() {
    let free = 0
    while (free < options.concurrency && (yield* options.slots.takeIfAvailable(1))) free++
    options.starved(free === 0)
    const claimed = free === 0 ? 0 : yield* Effect.uninterruptible(Effect.gen(function*() {
      const claimed = yield* options.claim(free)
      let started = 0
      for (const item of claimed) if (yield* options.place(item)) started++
      yield* options.slots.release(free - started)
      return claimed.length
    }))
    if (free > 0 && claimed === free) return
    yield* options.wakeup.wait(pollInterval)
  }))
