// The one scheduler on its own, without a database (PROTOCOL.md, "chat-order" and "Stop and
// shutdown"): items of one chat one after the other in order, chats side by side within the
// slots, a stopped chat's waiting items back to the table, and shutdown's grace period.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Option, Scope } from "effect"
import { type ChatWork, makeChatScheduler, Step } from "../../src/queue/ChatScheduler.ts"
import { makeHandOff } from "../../src/queue/HandOff.ts"
import { Instance } from "../../src/queue/Instance.ts"
import { makeWakeup } from "../../src/queue/Notifications.ts"
import { eventually } from "../support/Eventually.ts"

interface Item extends ChatWork {
  readonly n: number
}

/** A scheduler over a real hand-off and an empty table; `step` decides how each item ends. */
const schedule = (options: {
  readonly concurrency: number
  readonly step: (item: Item) => Effect.Effect<Step<Item>>
  readonly shutdownGrace?: Duration.Input
}) =>
  Effect.gen(function*() {
    const instance = yield* Instance
    const released: Array<number> = []
    const scope = yield* Scope.make()
    const handOff = yield* makeHandOff<Item>({
      capacity: 100,
      isUrgent: () => false,
      hold: () => Effect.void,
      giveBack: (item) => Effect.sync(() => void released.push(item.n))
    }).pipe(Scope.provide(scope))
    yield* makeChatScheduler<Item>({
      what: "item",
      concurrency: options.concurrency,
      shutdownGrace: Duration.fromInputUnsafe(options.shutdownGrace ?? "1 second"),
      order: (item) => item.n,
      step: options.step,
      handOff,
      claim: () => Effect.succeed([]),
      release: (item) => Effect.sync(() => void released.push(item.n)),
      letGo: (item) => Effect.sync(() => handOff.freeUnsafe(item.leaseId)),
      wakeup: yield* makeWakeup
    }).pipe(Scope.provide(scope))
    const put = (chatKey: string, n: number) => handOff.put({ id: String(n), leaseId: `lease-${n}`, owner: instance.owner(), chatKey, n })
    return { put, released, close: Scope.close(scope, Exit.void) }
  })

describe("ChatScheduler", () => {
  it.live("runs a chat's items one after the other in order, other chats beside it, never more than its slots at once", () =>
    Effect.gen(function*() {
      const started: Array<Item> = []
      const finished: Array<Item> = []
      const besideItsChat: Array<number> = []
      let running = 0
      let mostAtOnce = 0
      const step = (item: Item) =>
        Effect.gen(function*() {
          if (started.some((other) => other.chatKey === item.chatKey && !finished.includes(other))) besideItsChat.push(item.n)
          started.push(item)
          mostAtOnce = Math.max(mostAtOnce, ++running)
          yield* Effect.sleep("5 millis")
          running--
          finished.push(item)
          return Step.done<Item>()
        })
      const scheduler = yield* schedule({ concurrency: 2, step })
      // Chat a's items come two in a row: the second arrives while the first runs.
      const chats = ["a", "a", "b", "a", "c"]
      for (let n = 1; n <= 30; n++) yield* scheduler.put(chats[n % chats.length]!, n)
      yield* eventually("every item finished", Effect.sync(() => finished.length), (count) => count === 30)
      for (const chat of new Set(chats)) {
        const order = started.filter((item) => item.chatKey === chat).map((item) => item.n)
        assert.deepStrictEqual(order, [...order].sort((x, y) => x - y), `chat ${chat} in order`)
      }
      assert.deepStrictEqual(besideItsChat, [], "no item started beside another of its chat")
      assert.strictEqual(mostAtOnce, 2, "two slots, both used")
      yield* scheduler.close
    }).pipe(Effect.provide(Instance.layer)))

  it.live("a stopped step sends what waits behind it in its chat back to the table; other chats go on", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const ran: Array<number> = []
      const step = (item: Item) =>
        Effect.gen(function*() {
          ran.push(item.n)
          if (item.n === 1) {
            yield* Deferred.await(gate)
            return Step.stopped
          }
          return Step.done<Item>()
        })
      const scheduler = yield* schedule({ concurrency: 2, step })
      yield* scheduler.put("a", 1)
      yield* eventually("item 1 running", Effect.sync(() => ran), (items) => items.includes(1))
      // Behind the running item of chat a: they queue; chat b's runs in the other slot.
      yield* scheduler.put("a", 2)
      yield* scheduler.put("a", 3)
      yield* scheduler.put("b", 4)
      yield* eventually("chat b's item ran", Effect.sync(() => ran), (items) => items.includes(4))
      yield* Deferred.succeed(gate, undefined)
      yield* eventually("chat a's waiting items back in the table", Effect.sync(() => [...scheduler.released]), (released) =>
        released.length === 2)
      assert.sameMembers(scheduler.released, [2, 3])
      assert.deepStrictEqual(
        ran.filter((n) =>
          n !== 4
        ),
        [1],
        "nothing of chat a ran after its stopped item"
      )
      yield* scheduler.close
    }).pipe(Effect.provide(Instance.layer)))

  it.live("at shutdown a running step gets the grace period, then is interrupted; what waited goes back", () =>
    Effect.gen(function*() {
      const running = yield* Deferred.make<void>()
      let interrupted = false
      const step = () =>
        Deferred.succeed(running, undefined).pipe(
          Effect.andThen(Effect.never),
          Effect.onInterrupt(() => Effect.sync(() => void (interrupted = true))),
          Effect.as(Step.done<Item>(Option.none()))
        )
      const scheduler = yield* schedule({ concurrency: 1, step, shutdownGrace: "200 millis" })
      yield* scheduler.put("a", 1)
      yield* Deferred.await(running)
      yield* scheduler.put("a", 2)
      const closing = yield* Effect.timed(scheduler.close)
      assert.isTrue(interrupted, "the running step was interrupted")
      assert.isAtLeast(Duration.toMillis(closing[0]), 150, "after the grace period")
      // (The dispatcher's own step gives the interrupted update back; this one does not.)
      assert.deepStrictEqual(scheduler.released, [2], "the item waiting behind it went back to the table")
    }).pipe(Effect.provide(Instance.layer)))
})
