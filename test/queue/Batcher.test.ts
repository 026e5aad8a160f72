import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { makeBatcher } from "../../src/queue/Batcher.ts"
import { makeDeadlines } from "../../src/queue/Deadlines.ts"

class Late {
  readonly _tag = "Late"
}

describe("deadlines", () => {
  it.effect("an unsettled deadline expires once its timeout has passed, in the order started; a settled one never does", () =>
    Effect.gen(function*() {
      const start = yield* makeDeadlines(Duration.seconds(3))
      const expired: Array<string> = []
      start(() => expired.push("first"))
      const settled = start(() => expired.push("settled"))
      yield* TestClock.adjust("1 second")
      start(() => expired.push("second"))
      settled.settle()

      yield* TestClock.adjust("1999 millis")
      assert.deepStrictEqual(expired, [])
      yield* TestClock.adjust("1 milli")
      assert.deepStrictEqual(expired, ["first"])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(expired, ["first", "second"])
      // Idle, then started again: the watcher wakes for it.
      yield* TestClock.adjust("1 minute")
      start(() => expired.push("third"))
      yield* TestClock.adjust("3 seconds")
      assert.deepStrictEqual(expired, ["first", "second", "third"])
    }))
})

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
