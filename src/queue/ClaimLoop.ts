import { Effect, type Semaphore } from "effect"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"
import { pollInterval, type Wakeup } from "./Notifications.ts"

/**
 * The recovery path shared by the dispatcher and the sender: claims what nobody holds (backlogs,
 * retries, expired leases) from the table, at most as much as there are free slots, taken before
 * claiming so that everything claimed can start. Claiming and placing the claimed items are not
 * interrupted in between: a claimed row is always placed (started, or queued behind its chat) by
 * the time shutdown can stop the loop. A full batch means more may be waiting: claim again at once;
 * otherwise wait for a wake-up or the poll interval.
 */
export const makeClaimLoop = <A, E>(options: {
  /** What is claimed, for the log line when claiming fails. */
  readonly what: string
  readonly concurrency: number
  readonly slots: Semaphore.Semaphore
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<A>, E>
  /** Starts `item` in one of the slots taken (true), or queues it behind its chat (false). */
  readonly place: (item: A) => Effect.Effect<boolean>
  readonly wakeup: Wakeup
}) => {
  let starved = false
  const claimFailed = repeatedWarning(`claiming ${options.what} failed; retrying`)
  return {
    /**
     * Gives a slot back. The loop is woken only if it last found no free slot: waking it after
     * every run would cost a claim query per item, which the hand-off exists to avoid.
     */
    freeSlot: Effect.andThen(options.slots.release(1), Effect.suspend(() => starved ? options.wakeup.signal : Effect.void)),
    run: Effect.forever(Effect.gen(function*() {
      let free = 0
      while (free < options.concurrency && (yield* options.slots.takeIfAvailable(1))) free++
      starved = free === 0
      const claimed = free === 0 ? 0 : yield* Effect.uninterruptible(Effect.gen(function*() {
        const claimed = yield* options.claim(free).pipe(
          Effect.tap(() => claimFailed.recovered),
          Effect.catchCause((cause) => Effect.as(claimFailed.warn(cause), []))
        )
        let started = 0
        for (const item of claimed) if (yield* options.place(item)) started++
        yield* options.slots.release(free - started)
        return claimed.length
      }))
      if (free > 0 && claimed === free) return
      yield* options.wakeup.wait(pollInterval)
    }))
  }
}
