import { Context, Effect, Layer } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { AppConfig } from "../Config.ts"

/**
 * Telegram's global send limit (`SEND_RATE_PER_SECOND`), shared by the calls handlers make at once
 * and the calls sent after commit: a caller waits for its turn instead of earning a 429.
 */
export class SendRate extends Context.Service<SendRate, {
  /** Waits until one more call fits within the limit. */
  readonly throttle: Effect.Effect<void>
}>()("steadfast/telegram/SendRate") {
  static readonly layer = Layer.effect(
    SendRate,
    Effect.gen(function*() {
      const config = yield* AppConfig
      const limiter = yield* RateLimiter.RateLimiter
      // Built once: the store reads the clock each time the effect runs. The in-memory store
      // cannot fail.
      const throttle = RateLimiter.sleep(limiter, {
        key: "bot-api",
        limit: config.sendRatePerSecond,
        window: "1 second",
        algorithm: "token-bucket"
      }).pipe(Effect.orDie, Effect.asVoid)
      return SendRate.of({ throttle })
    })
  ).pipe(Layer.provide(RateLimiter.layer), Layer.provide(RateLimiter.layerStoreMemory))
}
