// The shared deadline watcher on its own, on the test clock.
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import { makeDeadlines } from "../../src/queue/Deadlines.ts"

describe("makeDeadlines", () => {
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

  it.effect("deadlines started at the same moment expire together, each once; settling after expiry changes nothing", () =>
    Effect.gen(function*() {
      const start = yield* makeDeadlines(Duration.millis(500))
      const expired: Array<number> = []
      const deadlines = [1, 2, 3].map((n) => start(() => expired.push(n)))
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(expired, [1, 2, 3])
      for (const deadline of deadlines) deadline.settle()
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(expired, [1, 2, 3])
    }))

  it.effect("thousands of settled deadlines ahead of an open one neither expire nor hold it up", () =>
    Effect.gen(function*() {
      const start = yield* makeDeadlines(Duration.seconds(1))
      const expired: Array<number> = []
      // More settled entries than the watcher drops at once before compacting its list.
      for (let i = 0; i < 3000; i++) start(() => expired.push(i)).settle()
      start(() => expired.push(-1))
      for (let i = 0; i < 10; i++) start(() => expired.push(i)).settle()
      yield* TestClock.adjust("999 millis")
      assert.deepStrictEqual(expired, [])
      yield* TestClock.adjust("1 milli")
      assert.deepStrictEqual(expired, [-1])
      // The compacted list still takes new deadlines.
      start(() => expired.push(-2))
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(expired, [-1, -2])
    }))

  it.effect("nothing expires once the scope that owns the watcher has closed", () =>
    Effect.gen(function*() {
      const expired: Array<string> = []
      const start = yield* Effect.scoped(makeDeadlines(Duration.seconds(1)))
      start(() => expired.push("orphan"))
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(expired, [])
    }))
})
