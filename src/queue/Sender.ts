import { Duration, Effect, Layer, Metric, Option } from "effect"
import { AppConfig, outboxSettings } from "../Config.ts"
import { persistently } from "../db/Faults.ts"
import { makeChatScheduler, Step } from "./ChatScheduler.ts"
import { Notifications } from "./Notifications.ts"
import { FiberDump } from "../observability/FiberDump.ts"
import * as Metrics from "../observability/Metrics.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { SendRate } from "../telegram/SendRate.ts"
import { backoff } from "./Backoff.ts"
import type { ClaimedCall } from "./Claimed.ts"
import { Outbox } from "./Outbox.ts"

/** The first wait before a transiently failed call is tried again; it doubles up to OUTBOX_RETRY_MAX_MS. */
const FIRST_RETRY_DELAY = Duration.seconds(1)

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

    // A delivery is Done when sent (with the chat's next call if marking it sent leased that to us),
    // Passed when it failed for good, Stopped when it waits to be retried.
    const deliver = (call: ClaimedCall): Effect.Effect<Step<ClaimedCall>> =>
      throttle.pipe(
        Effect.andThen(botApi.callRaw(call.method, call.payload)),
        // Once the call is made its outcome is known; if the database is away, recording it is
        // retried (the lease is renewed meanwhile; the updates are fenced by the lease id).
        Effect.andThen(persistently(outbox.markSent(call))),
        Effect.map(Step.done),
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
              Effect.flatMap((status): Effect.Effect<Step<ClaimedCall>> =>
                Option.isSome(status) && status.value === "expired" ? giveUp(call, error.message) : Effect.succeed(Step.stopped)
              )
            )
          }
        }),
        Effect.onInterrupt(() => outbox.release(call).pipe(Effect.ignoreCause)),
        Effect.ensuring(outbox.leases.release(call)),
        // Its outcome is not recorded: the call stays leased in the table till its lease expires
        // (deliverChat then forgets, so nothing of its chat overtakes it from memory).
        Effect.catchCause((cause) =>
          Effect.as(Effect.logError(`delivering outbox call ${call.id} (${call.method}) failed`, cause), Step.stopped)
        ),
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
        Step.passed
      )

    // Retries ran out of time, not Telegram's patience: the row is already expired; the chat goes on.
    const giveUp = (call: ClaimedCall, description: string): Effect.Effect<Step<ClaimedCall>> =>
      Effect.as(
        Effect.andThen(
          Effect.logWarning(
            `gave up on ${call.method} to ${call.chatKey}: still failing after OUTBOX_MAX_AGE (${
              Duration.format(settings.maxAge)
            }); last error: ${description}; requeue with: npm run ops -- retry --call ${call.id}`
          ).pipe(Effect.annotateLogs({ method: call.method, chat: call.chatKey, outbox_id: call.id })),
          Metric.update(Metrics.outboxCallsDiscarded, 1)
        ),
        Step.passed
      )

    yield* makeChatScheduler<ClaimedCall>({
      what: "outbox call",
      concurrency: config.senderConcurrency,
      shutdownGrace: config.shutdownGrace,
      order: (call) => Number(call.id),
      step: deliver,
      handOff: outbox.handedOff,
      claim: (limit) => outbox.claim(limit),
      release: outbox.release,
      letGo: outbox.leases.release,
      wakeup
    })
  }))
}
