import { Duration, Effect, FiberSet, Layer, Option, Schedule, Semaphore } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { AppConfig } from "../Config.ts"
import { Notifications, pollInterval } from "../db/Notifications.ts"
import { FiberDump } from "../observability/FiberDump.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { type ClaimedCall, Outbox } from "./Outbox.ts"

/** Delivery attempts for a call the Bot API keeps failing transiently (5xx, network) before it is failed for good. */
const MAX_DELIVERY_ATTEMPTS = 8

/** How a delivery ended: sent (with the chat's next call if it was leased to us), failed for good, or to be retried later. */
type Delivery = { readonly _tag: "Sent"; readonly next: Option.Option<ClaimedCall> } | { readonly _tag: "Failed" } | { readonly _tag: "Later" }
const failed: Delivery = { _tag: "Failed" }
const later: Delivery = { _tag: "Later" }

/**
 * Sender fibers deliver outbox rows to the Bot API: one call in flight per chat (so a chat's
 * replies arrive in order), at most `SEND_RATE_PER_SECOND` calls per second overall. Calls reach
 * it from memory (written leased to us by the update's commit) or by claim (everything else). A
 * call that fails for good (blocked by the user, rejected) is kept with its error and the chat's
 * next call goes on; one that must wait (5xx, a long 429) goes back to the table with its delay,
 * holding no lease and no fiber meanwhile.
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
      const slots = yield* Semaphore.make(config.senderConcurrency)

      const senders = yield* FiberSet.make<void>()
      yield* Effect.addFinalizer(() => Effect.timeoutOption(FiberSet.awaitEmpty(senders), config.shutdownGrace))

      // Once the call is made its outcome is known; if the database is briefly away, keep trying
      // to record it (the lease is renewed meanwhile). The updates are guarded by the lease id, so
      // repeating them is harmless.
      const recordOutcome = <A, E>(effect: Effect.Effect<A, E>) =>
        Effect.retry(effect, { schedule: Schedule.spaced("500 millis"), times: 120 })

      const deliver = (call: ClaimedCall): Effect.Effect<Delivery> =>
        RateLimiter.sleep(limiter, {
          key: "bot-api",
          limit: config.sendRatePerSecond,
          window: "1 second",
          algorithm: "token-bucket"
        }).pipe(
          Effect.andThen(botApi.callRaw(call.method, call.payload)),
          Effect.andThen(recordOutcome(outbox.markSent(call))),
          Effect.map((next): Delivery => ({ _tag: "Sent", next })),
          Effect.catchTags({
            ChatBlocked: (error) => failForGood(call, error.message),
            BotApiRejected: (error) => failForGood(call, error.message),
            BotApiUnavailable: (error) => {
              if (call.attempts >= MAX_DELIVERY_ATTEMPTS) return failForGood(call, error.message)
              // Telegram's flood wait when it named one, else exponential backoff.
              const delay = error.retryAfterSeconds !== undefined
                ? Duration.seconds(error.retryAfterSeconds)
                : Duration.seconds(Math.min(60, 2 ** call.attempts))
              return Effect.as(recordOutcome(outbox.fail(call, error.message, delay)), later)
            }
          }),
          Effect.onInterrupt(() => outbox.release(call).pipe(Effect.ignoreCause)),
          Effect.ensuring(outbox.leases.release(call)),
          Effect.catchCause((cause) => Effect.as(Effect.logError(`delivering outbox call ${call.id} (${call.method}) failed`, cause), later)),
          withTraceLogs,
          fiberDump.track(`deliver ${call.method} (outbox ${call.id})`),
          // Delivery continues the trace of the processing that queued the call.
          Effect.withSpan("Sender.deliver", {
            kind: "producer",
            ...Option.match(spanFromTraceparent(call.traceparent), { onNone: () => ({ root: true }), onSome: (parent) => ({ parent }) }),
            attributes: { "telegram.method": call.method, "steadfast.outbox_id": call.id, "steadfast.attempt": call.attempts }
          })
        )

      const failForGood = (call: ClaimedCall, description: string) =>
        Effect.as(
          Effect.andThen(
            Effect.logWarning(`Bot API refused ${call.method} to ${call.chatKey} for good: ${description}`).pipe(
              Effect.annotateLogs({ method: call.method, chat: call.chatKey })
            ),
            recordOutcome(outbox.fail(call, description, undefined))
          ),
          failed
        )

      // Calls of one chat handed over together go out one after the other, then the chat's next
      // call if marking the last one sent leased it to us. If one has to wait, the rest go back to
      // the table, to be claimed after it in id order; if one failed for good, the chat goes on.
      const deliverInOrder = (calls: ReadonlyArray<ClaimedCall>): Effect.Effect<void> =>
        Effect.suspend(() => {
          const [first, ...rest] = calls
          if (first === undefined) return Effect.void
          return Effect.flatMap(deliver(first), (delivery) => {
            switch (delivery._tag) {
              case "Sent":
                return deliverInOrder(rest.length === 0 ? Option.toArray(delivery.next) : rest)
              case "Failed":
                return rest.length === 0 ? wakeup.signal : deliverInOrder(rest)
              case "Later":
                return Effect.forEach(rest, (call) =>
                  outbox.release(call).pipe(Effect.ignoreCause, Effect.ensuring(outbox.leases.release(call))), { discard: true })
            }
          })
        })

      // The claim loop is woken by a freed slot only if it last found none: waking it after every
      // run would cost a claim query per update, which the hand-off exists to avoid.
      let starved = false
      const slotFreed = Effect.suspend(() => starved ? wakeup.signal : Effect.void)
      const startInSlot = (calls: ReadonlyArray<ClaimedCall>) =>
        FiberSet.run(senders, Effect.forEach(byChat(calls), deliverInOrder, { concurrency: "unbounded", discard: true }).pipe(Effect.ensuring(Effect.andThen(slots.release(1), slotFreed))), {
          startImmediately: true
        })

      const byChat = (calls: ReadonlyArray<ClaimedCall>) => {
        const groups = new Map<string, Array<ClaimedCall>>()
        for (const call of calls) groups.set(call.chatKey, [...(groups.get(call.chatKey) ?? []), call])
        return [...groups.values()]
      }

      // As in the dispatcher: leased calls are either delivering or still in the outbox's queue
      // (released there at shutdown), never lost between the two. One update's calls share a slot.
      const handOffLoop = Effect.forever(Effect.gen(function*() {
        yield* slots.take(1)
        yield* Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(
            Effect.onInterrupt(restore(outbox.takeHandedOff), () => slots.release(1)),
            (calls) => startInSlot(calls)
          ))
      }))

      const claimLoop = Effect.forever(Effect.gen(function*() {
        let free = 0
        while (free < config.senderConcurrency && (yield* slots.takeIfAvailable(1))) free++
        starved = free === 0
        const claimed = free === 0 ? 0 : yield* Effect.uninterruptible(Effect.gen(function*() {
          const claimed = yield* outbox.claim(free).pipe(
            Effect.catchCause((cause) => Effect.as(Effect.logWarning("claiming outbox calls failed; retrying", cause), []))
          )
          for (const call of claimed) yield* startInSlot([call])
          yield* slots.release(free - claimed.length)
          return claimed.length
        }))
        if (free > 0 && claimed === free) return
        yield* wakeup.wait(pollInterval)
      }))
      yield* Effect.forkScoped(handOffLoop)
      yield* Effect.forkScoped(claimLoop)
    })).pipe(Layer.provide(RateLimiter.layer), Layer.provide(RateLimiter.layerStoreMemory))
}
