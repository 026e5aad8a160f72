import { Effect, Queue, type Scope } from "effect"
import type { Claimed } from "./Claimed.ts"

/** Kinds Telegram needs answered within seconds jump the queue (they have their own chat key, so order is kept). */
export const URGENT_KINDS: ReadonlySet<string> = new Set(["pre_checkout_query", "shipping_query"])
/** Updates leased at store time and waiting in memory for a worker. */
const HANDOFF_CAPACITY = 1_000

/**
 * Updates leased to this instance without a claim (by the store, or by the finish of their chat's
 * previous update) on their way to the dispatcher: urgent kinds first (Telegram cancels a payment
 * whose pre-checkout query waits 10 s), then in order of arrival. An update counts against the
 * capacity from the moment room is reserved for it until its lease is let go, so what the store
 * leases to us always fits.
 */
export interface HandOff {
  /** Reserves room for up to `wanted` updates (synchronous); answers how many fit. */
  readonly reserveUnsafe: (wanted: number) => number
  readonly unreserveUnsafe: (reserved: number) => void
  /** Queues a leased update for the dispatcher. */
  readonly put: (update: Claimed) => Effect.Effect<void>
  /** The next update, urgent kinds first (synchronous, so the dispatcher places it in the same step). */
  readonly takeUnsafe: () => Claimed | undefined
  /** The updates of `chatKey` still waiting (synchronous, for the same reason). */
  readonly takeOfChatUnsafe: (chatKey: string) => ReadonlyArray<Claimed>
  /** Waits until an update may have arrived since the last take. */
  readonly awaitArrival: Effect.Effect<void>
  /** The update's lease is let go: its room is free. */
  readonly freeUnsafe: (leaseId: string) => void
}

export const makeHandOff = (options: {
  /** Starts renewing the update's lease. */
  readonly hold: (update: Claimed) => Effect.Effect<void>
  /** Returns a leased update that never started to the table (shutdown). */
  readonly giveBack: (update: Claimed) => Effect.Effect<void>
}): Effect.Effect<HandOff, never, Scope.Scope> =>
  Effect.gen(function*() {
    const waitingUrgent: Array<Claimed> = []
    const waitingOther: Array<Claimed> = []
    const arrived = yield* Queue.sliding<void>(1)
    const inMemory = new Set<string>()
    let reserved = 0
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...waitingUrgent.splice(0), ...waitingOther.splice(0)], options.giveBack, { discard: true })
    )
    return {
      reserveUnsafe: (wanted) => {
        const room = Math.max(0, Math.min(wanted, HANDOFF_CAPACITY - inMemory.size - reserved))
        reserved += room
        return room
      },
      unreserveUnsafe: (room) => void (reserved -= room),
      put: (update) =>
        Effect.andThen(
          options.hold(update),
          Effect.suspend(() => {
            inMemory.add(update.leaseId)
            ;(URGENT_KINDS.has(update.kind) ? waitingUrgent : waitingOther).push(update)
            return Queue.offer(arrived, undefined)
          })
        ),
      takeUnsafe: () => waitingUrgent.shift() ?? waitingOther.shift(),
      takeOfChatUnsafe: (chatKey) => {
        const taken: Array<Claimed> = []
        for (const waiting of [waitingUrgent, waitingOther]) {
          for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i]!.chatKey === chatKey) taken.unshift(...waiting.splice(i, 1))
        }
        return taken
      },
      awaitArrival: Effect.asVoid(Queue.take(arrived)),
      freeUnsafe: (leaseId) => void inMemory.delete(leaseId)
    }
  })
