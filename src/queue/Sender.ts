import { Duration, Effect, FiberSet, Layer, Metric, Option, Semaphore } from "effect"
import { AppConfig, outboxSettings } from "../Config.ts"
import { persistently } from "../db/Faults.ts"
import { Instance } from "./Instance.ts"
import { makeChatQueues } from "./ChatQueues.ts"
import { makeClaimLoop } from "./ClaimLoop.ts"
import { Notifications } from "./Notifications.ts"
import { FiberDump } from "../observability/FiberDump.ts"
import * as Metrics from "../observability/Metrics.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { SendRate } from "../telegram/SendRate.ts"
import { backoff } from "./Backoff.ts"
import { type ClaimedCall, Outbox } from "./Outbox.ts"

/** The first wait before a transiently failed call is tried again; it doubles up to OUTBOX_RETRY_MAX_MS. */
const FIRST_RETRY_DELAY = Duration.seconds(1)

/** How a delivery ended: sent (with the chat's next call if it was leased to us), failed for good, or to be retried later. */
type Delivery = { readonly _tag: "Sent"; readonly next: Option.Option<ClaimedCall> } | { readonly _tag: "Failed" } | {
  readonly _tag: "Later"
}
const failed: Delivery = { _tag: "Failed" }
const later: Delivery = { _tag: "Later" }

/**
 * Sender fibers deliver outbox rows to the Bot API: one call in flight per chat (so a chat's
 * replies arrive in order), at most `SEND_RATE_PER_SECOND` calls per second overall. Calls reach
 * it from memory (written leased to us by the update's commit) or by claim (everything else). A
 * call that fails for good (blocked by the user, rejected: Telegram's own refusal) is kept with
 * its error and the chat's next call goes on; one that must wait (5xx, timeouts, connection errors,
 * a long 429) goes back to the table with its delay, holding no lease and no fiber meanwhile, and
 * the chat's later calls wait behind it. Such a call is retried with capped backoff for as long as
 * OUTBOX_MAX_AGE (by age, never by a count: an outage of any length loses nothing younger), then
 * expired: kept, counted, and requeueable by an operator.
 */
export const Sender = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const settings = yield* outboxSettings
    const outbox = yield* Outbox
    const botApi = yield* BotApi
    const { outbox: wakeup } = yield* Notifications
    const { throttle } = yield* SendRate
    const fiberDump = yield* FiberDump
    const instance = yield* Instance
    const slots = yield* Semaphore.make(config.senderConcurrency)

    // Chats delivering here, each with the calls leased to us that wait behind the one in flight,
    // in id order. One fiber delivers a chat's calls one after the other, in one slot.
    const chats = makeChatQueues<ClaimedCall>((call) => Number(call.id))
    // Gives a call back to the table: at shutdown once (its lease expires if that fails), while
    // running until it is done.
    const giveBack = (call: ClaimedCall) => outbox.release(call).pipe(Effect.ignoreCause, Effect.ensuring(outbox.leases.release(call)))
    const returnToTable = (call: ClaimedCall) =>
      persistently(outbox.release(call)).pipe(Effect.ignoreCause, Effect.ensuring(outbox.leases.release(call)))
    // Runs after the senders are gone (finalizers run in reverse): what waited behind them goes back.
    yield* Effect.addFinalizer(() => chats.giveBackAll(giveBack))

    const senders = yield* FiberSet.make<void>()
    yield* Effect.addFinalizer(() => Effect.timeoutOption(FiberSet.awaitEmpty(senders), config.shutdownGrace))

    const deliver = (call: ClaimedCall): Effect.Effect<Delivery> =>
      throttle.pipe(
        Effect.andThen(botApi.callRaw(call.method, call.payload)),
        // Once the call is made its outcome is known; if the database is away, recording it is
        // retried (the lease is renewed meanwhile; the updates are fenced by the lease id).
        Effect.andThen(persistently(outbox.markSent(call))),
        Effect.map((next): Delivery => ({ _tag: "Sent", next })),
        Effect.catchTags({
          ChatBlocked: (error) => failForGood(call, 403, error.description),
          BotApiRejected: (error) => failForGood(call, error.errorCode, error.description),
          BotApiUnavailable: (error) => {
            // Telegram's flood wait when it named one (not an attempt: the call did nothing wrong),
            // else exponential backoff up to the cap.
            const flood = error.retryAfterSeconds !== undefined
            const delay = flood
              ? Duration.seconds(error.retryAfterSeconds ?? 0)
              : backoff(call.attempts, { first: FIRST_RETRY_DELAY, cap: settings.retryMaxDelay })
            return persistently(outbox.fail(call, error.message, { delay, counted: !flood, maxAge: settings.maxAge })).pipe(
              Effect.flatMap((status): Effect.Effect<Delivery> =>
                Option.isSome(status) && status.value === "expired" ? giveUp(call, error.message) : Effect.succeed(later)
              )
            )
          }
        }),
        Effect.onInterrupt(() => outbox.release(call).pipe(Effect.ignoreCause)),
        Effect.ensuring(outbox.leases.release(call)),
        // Its outcome is not recorded: the call stays leased in the table till its lease expires
        // (deliverChat then forgets, so nothing of its chat overtakes it from memory).
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

    // Telegram's own refusal (a 4xx other than 429): final, in Telegram's words.
    const failForGood = (call: ClaimedCall, code: number, description: string) =>
      Effect.as(
        Effect.andThen(
          Effect.logWarning(`Bot API refused ${call.method} to ${call.chatKey} (${code}): ${description}`).pipe(
            Effect.annotateLogs({ method: call.method, chat: call.chatKey, outbox_id: call.id })
          ),
          Effect.andThen(
            persistently(outbox.fail(call, `Bot API ${code}: ${description}`, undefined)),
            Metric.update(Metrics.outboxCallsFailed, 1)
          )
        ),
        failed
      )

    // Retries ran out of time, not Telegram's patience: the row is already expired; the chat goes on.
    const giveUp = (call: ClaimedCall, description: string): Effect.Effect<Delivery> =>
      Effect.as(
        Effect.andThen(
          Effect.logWarning(
            `gave up on ${call.method} to ${call.chatKey}: still failing after OUTBOX_MAX_AGE (${
              Duration.format(settings.maxAge)
            }); last error: ${description}; requeue with: npm run ops -- retry --call ${call.id}`
          ).pipe(Effect.annotateLogs({ method: call.method, chat: call.chatKey, outbox_id: call.id })),
          Metric.update(Metrics.outboxCallsDiscarded, 1)
        ),
        failed
      )

    // Then the chat's next call: queued here, or leased to us by marking this one sent. If one has
    // to wait, the rest go back to the table, to be claimed after it in id order; if one failed for
    // good, the chat goes on.
    const deliverChat = (call: ClaimedCall): Effect.Effect<void> =>
      Effect.flatMap(deliver(call), (delivery) =>
        Effect.suspend(() => {
          const queue = chats.waiting(call.chatKey)
          if (delivery._tag === "Sent") Option.map(delivery.next, chats.enqueue)
          const next = delivery._tag === "Later" ? undefined : queue.shift()
          if (next !== undefined) return deliverChat(next)
          if (delivery._tag !== "Later") {
            chats.letGo(call.chatKey)
            return delivery._tag === "Failed" ? wakeup.signal : Effect.void
          }
          // The chat stays held here until all that queued behind (also meanwhile) is back. Calls of
          // ours still on their way (leased just before) count as stale: they go back too.
          return Effect.andThen(instance.forget, chats.drain(call.chatKey, returnToTable))
        }))

    const startInSlot = (call: ClaimedCall): Effect.Effect<unknown> =>
      FiberSet.run(senders, deliverChat(call).pipe(Effect.ensuring(recovery.freeSlot)), {
        startImmediately: true
      })

    // As in the dispatcher: a leased call is always delivering, queued here, or in the outbox's
    // queue, and each of those gives it back when interrupted.
    const handOffLoop = Effect.forever(
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(outbox.takeHandedOff), (calls) =>
          Effect.forEach(calls, (call, index) => {
            if (chats.isRunning(call.chatKey)) return Effect.sync(() => chats.enqueue(call))
            // Leased before the instance forgot: an earlier call of its chat may be lost in the table.
            if (call.owner !== instance.owner()) return giveBack(call)
            chats.start(call.chatKey)
            return restore(slots.take(1)).pipe(
              Effect.onInterrupt(() =>
                Effect.andThen(
                  Effect.forEach(calls.slice(index), giveBack, { discard: true }),
                  Effect.sync(() => chats.letGo(call.chatKey))
                )
              ),
              Effect.andThen(startInSlot(call))
            )
          }, { discard: true }))
      )
    )

    // Everything else, from the table.
    const recovery = makeClaimLoop({
      what: "outbox calls",
      concurrency: config.senderConcurrency,
      slots,
      claim: (limit) => outbox.claim(limit),
      place: (call) => chats.place(call, startInSlot),
      wakeup
    })
    yield* Effect.forkScoped(handOffLoop)
    yield* Effect.forkScoped(recovery.run)
  }))
}
