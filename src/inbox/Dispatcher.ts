import { Cause, Duration, Effect, Exit, Fiber, FiberSet, Layer, Metric, Option } from "effect"
import { Bot, type HandleResult } from "../bot/Bot.ts"
import { AppConfig } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { Notifications, pollInterval } from "../db/Notifications.ts"
import { describeFiber, FiberDump } from "../observability/FiberDump.ts"
import * as Metrics from "../observability/Metrics.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
import { type Claimed, Inbox } from "./Inbox.ts"

const currentTraceId = Effect.map(Effect.option(Effect.currentSpan), Option.match({ onNone: () => null, onSome: (span) => span.traceId }))

const RETRY_BASE = Duration.seconds(1)

/** Retry delay after the n-th failed attempt: exponential from `base`, capped at 5 minutes, with jitter. */
export const retryBackoff = (base: Duration.Duration, attempt: number): Duration.Duration => {
  const exponential = Duration.toMillis(base) * 2 ** Math.max(0, attempt - 1)
  return Duration.millis(Math.min(exponential, 300_000) * (0.8 + Math.random() * 0.4))
}

const processedBy = Metrics.tagged(Metrics.updatesProcessed)

class LeaseLost extends Error {}

/**
 * Worker fibers that claim updates from the inbox and run their handlers. All fibers live in
 * this layer's scope: on shutdown the claim loop stops first, running handlers get
 * `SHUTDOWN_GRACE_MS` to finish, and whatever is still running is interrupted — its transaction
 * rolls back and its lease is returned, so another instance (or the next start) takes it over.
 */
export const Dispatcher = {
  layer:
    Layer.effectDiscard(Effect.gen(function*() {
      const config = yield* AppConfig
      const db = yield* Database
      const inbox = yield* Inbox
      const bot = yield* Bot
      const { inbox: wakeup } = yield* Notifications
      const fiberDump = yield* FiberDump
      // A lease outlives the handler's timeout, so only a dead instance loses one; and while the
      // handler runs its transaction holds the row lock, which a claimer's SKIP LOCKED respects.
      const lease = Duration.sum(config.updateTimeout, Duration.seconds(5))

      const workers = yield* FiberSet.make<void>()
      yield* Effect.addFinalizer(() =>
        FiberSet.size(workers).pipe(
          Effect.flatMap((running) =>
            running === 0 ? Effect.void : Effect.logInfo(`waiting up to ${Duration.format(config.shutdownGrace)} for ${running} running update(s)`)
          ),
          Effect.andThen(Effect.timeoutOption(FiberSet.awaitEmpty(workers), config.shutdownGrace)),
          Effect.flatMap(Option.match({
            onSome: () => Effect.void,
            onNone: () => Effect.logWarning("shutdown grace period over; interrupting running updates")
          }))
        )
      )

      const runHandler = (update: Claimed) =>
        db.transaction(Effect.gen(function*() {
          const result = yield* bot.handle(update.updateId, update.kind, update.payload)
          // Finishing checks the lease: if another instance took the update over (ours expired),
          // this transaction rolls back and the handler's writes never happened.
          if (!(yield* inbox.finish(update, result.status, result.calls, yield* currentTraceId))) {
            return yield* Effect.die(new LeaseLost())
          }
          return result
        }))

      // A handler failure, once logged and recorded, ends the process span with error status and the exception.
      const noFailure = Option.none<Cause.Cause<unknown>>()

      const process = (update: Claimed) =>
        Effect.gen(function*() {
          // The handler runs in a child fiber so that, on timeout, we can say what it was doing
          // before interrupting it (interruption rolls its transaction back).
          const handler = yield* Effect.forkChild(
            runHandler(update).pipe(fiberDump.track(`handler of update ${update.updateId} (${update.kind})`)),
            { startImmediately: true }
          )
          const outcome = yield* Fiber.await(handler).pipe(
            Effect.timeoutOption(config.updateTimeout),
            // On shutdown, roll the handler back before its lease is released (its finish may hold the
            // row lock). Outside the timeout, so a timed-out handler is still running when described.
            Effect.onInterrupt(() => Fiber.interrupt(handler)),
            Effect.trackDuration(Metrics.processingDuration, (duration) => Duration.toSeconds(duration))
          )
          if (Option.isNone(outcome)) {
            const message = `timed out after ${Duration.format(config.updateTimeout)}`
            yield* Effect.logError(`update ${update.updateId} (${update.kind}) ${message} on attempt ${update.attempts}; it was doing:\n${describeFiber(handler)}`)
            yield* Fiber.interrupt(handler)
            yield* recordFailure(update, message)
            return Option.some(Cause.fail(new Cause.TimeoutError(message)))
          }
          const exit = outcome.value
          if (Exit.isSuccess(exit)) return yield* Effect.as(recordOutcome(update, exit.value), noFailure)
          if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.failCause(exit.cause)
          if (Cause.squash(exit.cause) instanceof LeaseLost) {
            yield* Effect.logWarning(`update ${update.updateId}: lease taken over by another instance; left to it`)
            return noFailure
          }
          yield* Effect.logError(`update ${update.updateId} (${update.kind}) failed on attempt ${update.attempts}`, exit.cause)
          yield* recordFailure(update, Cause.pretty(exit.cause))
          return Option.some(exit.cause)
        }).pipe(
          // Only shutdown interrupts a worker: give the update back without counting the attempt.
          Effect.onInterrupt(() => inbox.release(update).pipe(Effect.ignoreCause)),
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause)
              : Effect.as(
                Effect.logError(`could not record the outcome of update ${update.updateId}; its lease will expire and it will be retried`, cause),
                noFailure
              )
          ),
          Effect.flatMap(Option.match({ onNone: () => Effect.void, onSome: Effect.failCause })),
          withTraceLogs,
          Effect.annotateLogs({ update_id: update.updateId }),
          fiberDump.track(`update ${update.updateId} (${update.kind}) attempt ${update.attempts}`),
          // One trace per processing attempt, linked to the webhook request that stored the update.
          Effect.withSpan("process inbox", {
            kind: "consumer",
            root: true,
            links: Option.match(spanFromTraceparent(update.traceparent), {
              onNone: () => [],
              onSome: (span) => [{ span, attributes: { "steadfast.link": "webhook request" } }]
            }),
            attributes: {
              "messaging.system": "postgresql",
              "messaging.operation.type": "process",
              "messaging.operation.name": "process",
              "messaging.destination.name": "inbox",
              "messaging.message.id": String(update.updateId),
              "telegram.update_id": update.updateId,
              "telegram.update.kind": update.kind,
              "steadfast.attempt": update.attempts
            }
          }),
          // Already logged and recorded: the failure only had to reach the span.
          Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.void)
        )

      const recordFailure = (update: Claimed, error: string) =>
        Effect.gen(function*() {
          const outcome = yield* inbox.fail(update, error, config.maxAttempts, retryBackoff(RETRY_BASE, update.attempts), yield* currentTraceId)
          if (outcome === undefined) return
          const label = outcome === "dead" ? "dead" : "retried"
          yield* Effect.annotateCurrentSpan({ "steadfast.outcome": label })
          yield* Metric.update(processedBy({ outcome: label }), 1)
          if (outcome === "dead") yield* Effect.logError(`update ${update.updateId} dead-lettered after ${update.attempts} attempt(s)`)
        })

      const recordOutcome = (update: Claimed, result: HandleResult) =>
        Effect.andThen(
          Effect.annotateCurrentSpan({ "steadfast.outcome": result.status, ...(result.handler === undefined ? {} : { "steadfast.handler": result.handler }) }),
          Metric.update(processedBy({ outcome: result.status }), 1)
        )

      const claimLoop = Effect.gen(function*() {
        while (true) {
          const free = config.workerConcurrency - (yield* FiberSet.size(workers))
          if (free > 0) {
            const claimed = yield* inbox.claim(free, lease).pipe(
              Effect.catchCause((cause) =>
                Effect.as(Effect.logWarning("claiming updates failed; retrying", cause), [])
              )
            )
            for (const update of claimed) {
              yield* FiberSet.run(workers, Effect.ensuring(process(update), wakeup.signal))
            }
            // A full batch means more may be waiting: claim again at once.
            if (claimed.length === free && free > 0) continue
          }
          yield* wakeup.wait(pollInterval)
        }
      })
      yield* Effect.forkScoped(claimLoop)
    }))
}
