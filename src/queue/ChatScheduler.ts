import { Duration, Effect, FiberSet, Option, Semaphore, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { PoolTimeout } from "../db/Database.ts"
import { persistently } from "../db/Faults.ts"
import { makeChatQueues } from "./ChatQueues.ts"
import { makeClaimLoop } from "./ClaimLoop.ts"
import type { HeldLease } from "./LeaseRenewal.ts"
import { Instance } from "./Instance.ts"
import type { Wakeup } from "./Notifications.ts"

/** Work leased to this instance, for one chat: an update, or a call to make after commit. */
export interface ChatWork extends HeldLease {
  /** The owner id it was leased under (see Instance). */
  readonly owner: string
  readonly chatKey: string
}

/**
 * How one step (an update's run, a call's delivery) left its chat:
 * - `Done`: finished, with the chat's next item if the finish leased it to us;
 * - `Passed`: finished without success for good (dead-lettered, refused): the chat goes on;
 * - `Stopped`: to be retried later, taken over, or not recorded: nothing after it in the chat may
 *   run yet, so what waits behind it goes back to the table.
 */
export type Step<A> =
  | { readonly _tag: "Done"; readonly next: Option.Option<A> }
  | { readonly _tag: "Passed" }
  | { readonly _tag: "Stopped" }

const passed: Step<never> = { _tag: "Passed" }
const stopped: Step<never> = { _tag: "Stopped" }

export const Step = {
  done: <A>(next: Option.Option<A> = Option.none()): Step<A> => ({ _tag: "Done", next }),
  passed,
  stopped
}

/**
 * The one scheduler for work that runs per chat (PROTOCOL: chat-order, one-runner): the
 * dispatcher's updates and the sender's calls. One fiber per busy chat runs its items one after
 * the other, in one of `concurrency` slots. Items arrive leased, from memory (`handOff`: leased
 * when stored or by the finish of the chat's previous item, no claim) or from the table (`claim`,
 * the recovery path). Every leased item is always running, queued behind its chat here, or waiting
 * in the hand-off, and each of those gives it back to the table when interrupted. At shutdown the
 * loops stop first, running steps get `shutdownGrace`, then are interrupted; what waited goes back.
 */
export const makeChatScheduler = <A extends ChatWork>(options: {
  /** What runs, for log lines: "update", "outbox call". */
  readonly what: string
  readonly concurrency: number
  readonly shutdownGrace: Duration.Duration
  /** The order of a chat's items (update_id, outbox id). */
  readonly order: (item: A) => number
  /** Runs one item; `queuedBehind` tells how many of its chat's items wait here behind it. */
  readonly step: (item: A, queuedBehind: () => number) => Effect.Effect<Step<A>>
  readonly handOff: {
    /** The next item leased from memory (synchronous, so that it is placed in the same step). */
    readonly takeUnsafe: () => A | undefined
    /** The items of a chat still waiting there (synchronous, for the same reason). */
    readonly takeOfChatUnsafe: (chatKey: string) => ReadonlyArray<A>
    readonly awaitArrival: Effect.Effect<void>
  }
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<A>, SqlError | PoolTimeout>
  /** Returns an item to the table without counting its attempt. */
  readonly release: (item: A) => Effect.Effect<void, SqlError | PoolTimeout>
  /** Ends the item's lease in memory (renewal, hand-off room, waiters). */
  readonly letGo: (item: A) => Effect.Effect<void>
  /** Wakes the claim loop (notifications, and a chat that goes on after a dead item). */
  readonly wakeup: Wakeup
}): Effect.Effect<void, never, Scope.Scope | Instance> =>
  Effect.gen(function*() {
    const { handOff, what } = options
    const instance = yield* Instance
    const slots = yield* Semaphore.make(options.concurrency)
    const chats = makeChatQueues<A>(options.order)
    // Back to the table: at shutdown once (its lease expires if that fails), while running until it is done.
    const giveBack = (item: A) => options.release(item).pipe(Effect.ignoreCause, Effect.ensuring(options.letGo(item)))
    const returnToTable = (item: A) => persistently(options.release(item)).pipe(Effect.ignoreCause, Effect.ensuring(options.letGo(item)))
    // Runs after the workers are gone (finalizers run in reverse): what waited behind them goes back.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(chats.giveBackAll(giveBack), (handedBack) =>
        Effect.logInfo(`shutdown: ${handedBack} queued ${what}(s) handed back to the table, to run after a restart or elsewhere`))
    )

    const workers = yield* FiberSet.make<void>()
    yield* Effect.addFinalizer(() =>
      FiberSet.size(workers).pipe(
        Effect.flatMap((running) =>
          running === 0
            ? Effect.void
            : Effect.logInfo(`waiting up to ${Duration.format(options.shutdownGrace)} for ${running} running ${what}(s)`)
        ),
        Effect.andThen(Effect.timeoutOption(FiberSet.awaitEmpty(workers), options.shutdownGrace)),
        Effect.flatMap(Option.match({
          onSome: () =>
            Effect.logInfo(`shutdown: every running ${what} finished`),
          onNone: () =>
            Effect.flatMap(FiberSet.size(workers), (left) =>
              Effect.logWarning(
                `shutdown grace period over; interrupting ${left} running ${what}(s): rolled back and handed back, not counted`
              ))
        }))
      )
    )

    /** Runs `item`, then the items of its chat that queue here, one after the other. */
    const runChat = (item: A): Effect.Effect<void> =>
      Effect.flatMap(
        options.step(item, () =>
          chats.waiting(item.chatKey).length),
        (step) =>
          Effect.suspend(() => {
            const queue = chats.waiting(item.chatKey)
            if (step._tag === "Done") Option.map(step.next, chats.enqueue)
            const next = step._tag === "Stopped" ? undefined : queue.shift()
            if (next !== undefined) return runChat(next)
            // The chat is let go in the same synchronous step that finds nothing left of it here, so an
            // item handed over meanwhile either joined the queue or finds the chat free.
            if (step._tag !== "Stopped") {
              chats.letGo(item.chatKey)
              // Passed: its chat may go on, from the table if nothing of it queues here.
              return step._tag === "Passed" ? options.wakeup.signal : Effect.void
            }
            // Stopped: what waited behind goes back to the table, to be claimed in order later: what
            // queued here, what is handed over meanwhile, and what waits in the hand-off. Forgetting
            // makes every item of ours still on its way (leased just before the stop, not yet here)
            // count as stale, so it goes back too; and whatever a finish whose commit went unheard
            // may have leased to us counts as another owner's.
            return Effect.andThen(instance.forget, chats.drain(item.chatKey, returnToTable, () => handOff.takeOfChatUnsafe(item.chatKey)))
          })
      )

    const startInSlot = (item: A): Effect.Effect<unknown> =>
      FiberSet.run(workers, runChat(item).pipe(Effect.ensuring(recovery.freeSlot)), { startImmediately: true })

    // Items leased from memory: no claim, no re-read. One whose chat runs here queues behind it; any
    // other starts in a slot, taken before the item is, so the next free slot goes to the item
    // first in line. Taking and starting or queueing cannot be split by shutdown.
    const handOffLoop = Effect.forever(Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        yield* restore(slots.take(1))
        while (true) {
          // Taken and placed in one synchronous step: a chat that stops meanwhile cannot miss it.
          const placed = yield* Effect.sync(() => {
            const item = handOff.takeUnsafe()
            if (item === undefined) return undefined
            if (chats.isRunning(item.chatKey)) {
              chats.enqueue(item)
              return { queued: item }
            }
            // Leased before the instance forgot: an earlier item of its chat may be lost in the table.
            if (item.owner !== instance.owner()) return { stale: item }
            chats.start(item.chatKey)
            return { start: item }
          })
          if (placed === undefined) {
            yield* recovery.freeSlot
            return yield* restore(handOff.awaitArrival)
          }
          if ("stale" in placed) yield* giveBack(placed.stale)
          if ("start" in placed) return yield* startInSlot(placed.start)
        }
      })
    ))

    // Everything else, from the table.
    const recovery = makeClaimLoop({
      what: `${what}s`,
      concurrency: options.concurrency,
      slots,
      claim: options.claim,
      place: (item) => chats.place(item, startInSlot),
      wakeup: options.wakeup
    })
    yield* Effect.forkScoped(handOffLoop)
    yield* Effect.forkScoped(recovery.run)
  })
