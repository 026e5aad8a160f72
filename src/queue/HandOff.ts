import { Effect, Queue, type Scope } from "effect"
import type { ChatWork } from "./ChatScheduler.ts"

/**
 * Work leased to this instance without a claim, on its way to its scheduler (PROTOCOL: the hot
 * path): updates leased by the store or by the finish of their chat's previous update, calls
 * leased by the commit that wrote them. Urgent items first, then in order of arrival. An item
 * counts against `capacity` from the moment room is reserved for it until its lease is let go, so
 * what the store leases to us always fits.
 */
export interface HandOff<A> {
  /** Reserves room for up to `wanted` items (synchronous); answers how many fit. */
  readonly reserveUnsafe: (wanted: number) => number
  readonly unreserveUnsafe: (reserved: number) => void
  /** Queues a leased item for the scheduler (its lease is renewed from now on). */
  readonly put: (item: A) => Effect.Effect<void>
  /** The next item, urgent ones first (synchronous, so the scheduler places it in the same step). */
  readonly takeUnsafe: () => A | undefined
  /** The items of `chatKey` still waiting (synchronous, for the same reason). */
  readonly takeOfChatUnsafe: (chatKey: string) => ReadonlyArray<A>
  /** Waits until an item may have arrived since the last take. */
  readonly awaitArrival: Effect.Effect<void>
  /** The item's lease is let go: its room is free. */
  readonly freeUnsafe: (leaseId: string) => void
}

/** The side of a hand-off its scheduler takes from. */
export type HandedOff<A> = Pick<HandOff<A>, "takeUnsafe" | "takeOfChatUnsafe" | "awaitArrival">

export const makeHandOff = <A extends ChatWork>(options: {
  readonly capacity: number
  /** Items that jump the line (Telegram cancels a payment whose pre-checkout query waits 10 s). */
  readonly isUrgent: (item: A) => boolean
  /** Starts renewing the item's lease. */
  readonly hold: (item: A) => Effect.Effect<void>
  /** Returns an item that never started to the table (shutdown). */
  readonly giveBack: (item: A) => Effect.Effect<void>
}): Effect.Effect<HandOff<A>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const waitingUrgent: Array<A> = []
    const waitingOther: Array<A> = []
    const arrived = yield* Queue.sliding<void>(1)
    const inMemory = new Set<string>()
    let reserved = 0
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...waitingUrgent.splice(0), ...waitingOther.splice(0)], options.giveBack, { discard: true })
    )
    return {
      reserveUnsafe: (wanted) => {
        const room = Math.max(0, Math.min(wanted, options.capacity - inMemory.size - reserved))
        reserved += room
        return room
      },
      unreserveUnsafe: (room) => void (reserved -= room),
      put: (item) =>
        Effect.andThen(
          options.hold(item),
          Effect.suspend(() => {
            inMemory.add(item.leaseId)
            ;(options.isUrgent(item) ? waitingUrgent : waitingOther).push(item)
            return Effect.asVoid(Queue.offer(arrived, undefined))
          })
        ),
      takeUnsafe: () => waitingUrgent.shift() ?? waitingOther.shift(),
      takeOfChatUnsafe: (chatKey) => {
        const taken: Array<A> = []
        for (const waiting of [waitingUrgent, waitingOther]) {
          for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i]!.chatKey === chatKey) taken.unshift(...waiting.splice(i, 1))
        }
        return taken
      },
      awaitArrival: Effect.asVoid(Queue.take(arrived)),
      freeUnsafe: (leaseId) => void inMemory.delete(leaseId)
    }
  })
