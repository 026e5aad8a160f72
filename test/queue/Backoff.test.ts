// The one retry delay on its own: doubling from `first`, capped, with ±20% jitter.
import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import { backoff } from "../../src/queue/Backoff.ts"

const options = { first: Duration.seconds(1), cap: Duration.minutes(5) }

/** The delays of many draws for one attempt, in ms. */
const draws = (attempt: number, n = 500) => Array.from({ length: n }, () => Duration.toMillis(backoff(attempt, options)))

describe("backoff", () => {
  it("doubles from `first` with each failed attempt, within ±20%", () => {
    for (const [attempt, base] of [[1, 1_000], [2, 2_000], [3, 4_000], [5, 16_000]] as const) {
      for (const ms of draws(attempt)) {
        assert.isAtLeast(ms, base * 0.8, `attempt ${attempt}`)
        assert.isAtMost(ms, base * 1.2, `attempt ${attempt}`)
      }
    }
  })

  it("never exceeds the cap (plus its jitter), however many attempts failed", () => {
    for (const attempt of [10, 11, 31, 1_000, Number.MAX_SAFE_INTEGER]) {
      for (const ms of draws(attempt, 100)) {
        assert.isTrue(Number.isFinite(ms), `attempt ${attempt}`)
        assert.isAtLeast(ms, 300_000 * 0.8, `attempt ${attempt}`)
        assert.isAtMost(ms, 300_000 * 1.2, `attempt ${attempt}`)
      }
    }
  })

  it("an attempt number below 1 waits `first`, as the first retry does", () => {
    for (const attempt of [0, -3]) {
      for (const ms of draws(attempt, 100)) {
        assert.isAtLeast(ms, 800)
        assert.isAtMost(ms, 1_200)
      }
    }
  })

  it("is jittered: retries that failed together spread out instead of coming back together", () => {
    const delays = draws(4)
    assert.isAbove(new Set(delays).size, delays.length / 2, "draws differ")
    const spread = Math.max(...delays) - Math.min(...delays)
    // 500 uniform draws over ±20% of 8 s cover most of the 3.2 s range.
    assert.isAbove(spread, 8_000 * 0.4 * 0.8)
  })
})
