// The recovery path's claim loop on its own: it never claims more than it has free slots for, and
// a slot given back lets it claim again (PROTOCOL.md, "The recovery path").
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule, Semaphore } from "effect"
import { makeClaimLoop } from "../../src/queue/ClaimLoop.ts"
import { makeWakeup } from "../../src/queue/Notifications.ts"

const until = (condition: () => boolean) =>
  Effect.sync(condition).pipe(
    Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (met) => met }),
    Effect.timeout("5 seconds")
  )

describe("ClaimLoop", () => {
  it.live("claims at most as many items as there are free slots, and claims again once a slot is freed", () =>
    Effect.gen(function*() {
      const slots = yield* Semaphore.make(2)
      const wakeup = yield* makeWakeup
      const backlog = [1, 2, 3, 4, 5]
      const limits: Array<number> = []
      const started: Array<number> = []
      const loop = makeClaimLoop({
        what: "items",
        concurrency: 2,
        slots,
        claim: (limit) =>
          Effect.sync(() => {
            limits.push(limit)
            return backlog.splice(0, limit)
          }),
        // Each item starts in a slot the loop took, and holds it until the test frees it.
        place: (item) =>
          Effect.sync(() => {
            started.push(item)
            return true
          }),
        wakeup
      })
      yield* Effect.forkScoped(loop.run)

      yield* until(() => started.length === 2)
      assert.deepStrictEqual(limits, [2], "two free slots: two claimed")
      yield* loop.freeSlot
      yield* until(() => started.length === 3)
      yield* loop.freeSlot
      yield* loop.freeSlot
      yield* until(() => started.length === 5)
      assert.deepStrictEqual(started, [1, 2, 3, 4, 5])
      assert.isTrue(limits.every((limit) => limit <= 2), `claims asked for ${limits.join(", ")}`)
    }))
})
