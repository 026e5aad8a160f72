// The recovery path's claim loop on its own: it never claims more than it has free slots for, and
// a slot given back lets it claim again (PROTOCOL.md, "The recovery path").
import { assert, describe, it } from "@effect/vitest"
import { Effect, Semaphore } from "effect"
import { makeClaimLoop } from "../../src/queue/ClaimLoop.ts"
import { makeWakeup } from "../../src/queue/Notifications.ts"
import { eventually } from "../support/Eventually.ts"

const until = (what: string, condition: () => boolean) =>
  eventually(what, Effect.sync(condition), (met) => met, { timeout: "5 seconds", interval: "5 millis" })

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

      yield* until("two items started", () => started.length === 2)
      assert.deepStrictEqual(limits, [2], "two free slots: two claimed")
      yield* loop.freeSlot
      yield* until("a third item started", () => started.length === 3)
      yield* loop.freeSlot
      yield* loop.freeSlot
      yield* until("all five items started", () => started.length === 5)
      assert.deepStrictEqual(started, [1, 2, 3, 4, 5])
      assert.isTrue(limits.every((limit) => limit <= 2), `claims asked for ${limits.join(", ")}`)
    }))
})
