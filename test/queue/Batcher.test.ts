import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { makeBatcher } from "../../src/queue/Batcher.ts"

class Late {
  readonly _tag = "Late"
}

describe("makeBatcher", () => {
  it.effect("a timed caller fails with the timeout error after `timeout.after`; an untimed one keeps waiting; both items are in the batch", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const batches: Array<ReadonlyArray<number>> = []
      const submit = yield* makeBatcher<number, number, Late>({
        run: (items) => Effect.as(Effect.andThen(Effect.sync(() => batches.push(items)), Deferred.await(gate)), items),
        max: 10,
        writers: 1,
        timeout: { after: Duration.seconds(3), error: new Late() }
      })
      const timed = yield* Effect.forkChild(Effect.exit(submit(1, true)), { startImmediately: true })
      const untimed = yield* Effect.forkChild(Effect.exit(submit(2)), { startImmediately: true })
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(timed.pollUnsafe())
      yield* TestClock.adjust("1 milli")
      const late = yield* Fiber.join(timed)
      assert.isTrue(Exit.isFailure(late) && String(late.cause).includes("Late"))
      yield* TestClock.adjust("1 minute")
      assert.isUndefined(untimed.pollUnsafe())

      yield* Deferred.succeed(gate, undefined)
      assert.deepStrictEqual(yield* Fiber.join(untimed), Exit.succeed(2))
      assert.deepStrictEqual(batches.flat(), [1, 2])
    }))

  it.effect("a timed caller answered in time gets its result, also after the deadlines have been idle", () =>
    Effect.gen(function*() {
      const submit = yield* makeBatcher<number, number, Late>({
        run: (items) => Effect.succeed(items.map((item) => item * 10)),
        max: 10,
        writers: 1,
        timeout: { after: Duration.seconds(3), error: new Late() }
      })
      assert.strictEqual(yield* submit(4, true), 40)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* submit(5, true), 50)
    }))
})
