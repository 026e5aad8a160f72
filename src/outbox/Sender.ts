import { Duration, Effect, FiberSet, Layer, Option, Schedule } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { AppConfig } from "../Config.ts"
import { Notifications, pollInterval } from "../db/Notifications.ts"
import { FiberDump } from "../observability/FiberDump.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { type ClaimedCall, Outbox } from "./Outbox.ts"

/** Delivery attempts for a call the Bot API keeps failing transiently (5xx, network) before it is failed for good. */
const MAX_DELIVERY_ATTEMPTS = 8

/**
 * Sender fibers deliver outbox rows to the Bot API: one call in flight per chat (so a chat's
 * replies arrive in order), at most `SEND_RATE_PER_SECOND` calls per second overall, 429s
 * honoured by the client. A call that fails for good (blocked by the user, rejected) is kept
 * with its error; the chat's next call goes on.
 */
export const Sender = {
  layer:
    Layer.effectDiscard(Effect.gen(function*() {
      const config = yield* AppConfig
      const outbox = yield* Outbox
      const botApi = yield* BotApi
      const { outbox: wakeup } = yield* Notifications
      const limiter = yield* RateLimiter.RateLimiter
      const fiberDump = yield* FiberDump
      const concurrency = config.senderConcurrency
      const lease = Duration.minutes(2)

      const senders = yield* FiberSet.make<void>()
      yield* Effect.addFinalizer(() => Effect.timeoutOption(FiberSet.awaitEmpty(senders), config.shutdownGrace))

      // Once the call is made its outcome is known; if the database is briefly away, keep trying
      // to record it. Giving up leaves the row leased (2 minutes) and holds up the chat's later
      // calls that long. The updates are guarded by the lease id, so repeating them is harmless.
      const recordOutcome = <E>(effect: Effect.Effect<void, E>) =>
        Effect.retry(effect, { schedule: Schedule.spaced("500 millis"), times: 120 })

      const deliver = (call: ClaimedCall) =>
        RateLimiter.sleep(limiter, {
          key: "bot-api",
          limit: config.sendRatePerSecond,
          window: "1 second",
          algorithm: "token-bucket"
        }).pipe(
          Effect.andThen(botApi.callRaw(call.method, call.payload)),
          Effect.andThen(recordOutcome(outbox.markSent(call))),
          Effect.catchTags({
            ChatBlocked: (error) => recordOutcome(outbox.fail(call, error.message, undefined)),
            BotApiRejected: (error) => recordOutcome(outbox.fail(call, error.message, undefined)),
            BotApiUnavailable: (error) =>
              recordOutcome(outbox.fail(
                call,
                error.message,
                call.attempts >= MAX_DELIVERY_ATTEMPTS ? undefined : Duration.seconds(Math.min(60, 2 ** call.attempts))
              ))
          }),
          Effect.onInterrupt(() => outbox.release(call).pipe(Effect.ignoreCause)),
          Effect.catchCause((cause) => Effect.logError(`delivering outbox call ${call.id} (${call.method}) failed`, cause)),
          withTraceLogs,
          fiberDump.track(`deliver ${call.method} (outbox ${call.id})`),
          // Delivery continues the trace of the processing that queued the call.
          Effect.withSpan("Sender.deliver", {
            kind: "producer",
            ...Option.match(spanFromTraceparent(call.traceparent), { onNone: () => ({ root: true }), onSome: (parent) => ({ parent }) }),
            attributes: { "telegram.method": call.method, "steadfast.outbox_id": call.id, "steadfast.attempt": call.attempts }
          })
        )

      const claimLoop = Effect.gen(function*() {
        while (true) {
          const free = concurrency - (yield* FiberSet.size(senders))
          if (free > 0) {
            const claimed = yield* outbox.claim(free, lease).pipe(
              Effect.catchCause((cause) => Effect.as(Effect.logWarning("claiming outbox calls failed; retrying", cause), []))
            )
            for (const call of claimed) {
              yield* FiberSet.run(senders, Effect.ensuring(deliver(call), wakeup.signal))
            }
            if (claimed.length === free) continue
          }
          yield* wakeup.wait(pollInterval)
        }
      })
      yield* Effect.forkScoped(claimLoop)
    })).pipe(Layer.provide(RateLimiter.layer), Layer.provide(RateLimiter.layerStoreMemory))
}

