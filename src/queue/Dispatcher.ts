import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Predicate } from "effect"
import type { AttemptApi } from "../bot/AttemptApi.ts"
import { Bot, type HandleResult } from "../bot/Bot.ts"
import { AppConfig, callbackQueryMaxAge } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { isInfrastructureError, persistently } from "../db/Faults.ts"
import { lazyTransaction } from "../db/LazyTransaction.ts"
import { backoff } from "./Backoff.ts"
import { makeChatScheduler, Step } from "./ChatScheduler.ts"
import { makeDeadlines } from "./Deadlines.ts"
import { Notifications } from "./Notifications.ts"
import { Lifecycle } from "../Lifecycle.ts"
import { describeFiber, FiberDump } from "../observability/FiberDump.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type Reported, spanFromTraceparent, withReportingSpan, withTraceLogs } from "../observability/TraceContext.ts"
import { Outbox } from "./Outbox.ts"
import type { ChatBlocked } from "../telegram/BotApi.ts"
import type { RecordedCall } from "../telegram/RecordedCall.ts"
import type { Claimed } from "./Claimed.ts"
import type { Finished } from "./Finish.ts"
import { Inbox } from "./Inbox.ts"

const currentTraceId = Effect.map(Effect.option(Effect.currentSpan), Option.match({ onNone: () => null, onSome: (span) => span.traceId }))

const RETRY_FIRST = Duration.seconds(1)
const RETRY_CAP = Duration.minutes(5)
/** Runs that failed for lack of infrastructure are retried at least this often, however many there were. */
const INFRASTRUCTURE_RETRY_CAP = Duration.seconds(30)

/** A run that failed for lack of infrastructure is retried without counting toward MAX_ATTEMPTS. */
const isInfrastructureFailure = (cause: Cause.Cause<unknown>): boolean => Option.exists(Cause.findErrorOption(cause), isInfrastructureError)

/** The update cannot be handled whatever happens (it lacks what its kind requires): dead at once. */
const isInvalidUpdate = (cause: Cause.Cause<unknown>): boolean =>
  Option.exists(Cause.findErrorOption(cause), Predicate.isTagged("InvalidUpdate"))

/**
 * The handler failed on a call the chat refuses for good (the user blocked the bot, the bot was
 * removed): no run can do better, and nothing is wrong with the update or the service. It ends
 * skipped, with the refusal, as plain grammY would leave it: no retry, no dead letter.
 */
const blockedBy = (cause: Cause.Cause<unknown>): Option.Option<ChatBlocked> =>
  Option.filter(Cause.findErrorOption(cause), (error): error is ChatBlocked => Predicate.isTagged(error, "ChatBlocked"))

const processedBy = Metrics.tagged(Metrics.updatesProcessed)

/** The finishing statement matched no row: another instance took the update over. */
class LeaseLost extends Data.TaggedError("LeaseLost")<{}> {}

/** The span of one attempt: one trace per attempt, linked to the webhook request that stored the update. */
const attemptSpan = (update: Claimed) =>
  withReportingSpan("process inbox", {
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
  })

/**
 * Runs updates (PROTOCOL: one-runner, chat-order, fencing, bounded-attempts) on the chat
 * scheduler: those the inbox hands over from memory and those claimed from the table. At most
 * WORKER_CONCURRENCY run at once. On shutdown running handlers get `SHUTDOWN_GRACE_MS`, then are
 * interrupted: their transactions roll back and their leases are returned, uncounted.
 */
export const Dispatcher = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const callbackMaxAge = yield* callbackQueryMaxAge
    const db = yield* Database
    const inbox = yield* Inbox
    const outbox = yield* Outbox
    const bot = yield* Bot
    const lifecycle = yield* Lifecycle
    const { inbox: wakeup } = yield* Notifications
    const fiberDump = yield* FiberDump
    const startDeadline = yield* makeDeadlines(config.updateTimeout)

    // The handler's writes, the update's `done` mark and its calls commit together. The finish is
    // fenced by the lease: if another instance took the update over, it matches no row, this
    // transaction rolls back, and the handler's writes never happened.
    // The transaction, and the handler's pool slot, begin with the handler's first statement: a
    // handler that runs none holds no connection, and its finish shares one statement, in
    // autocommit, with those of other handlers finishing at the same moment.
    const runHandler = (update: Claimed, calls: AttemptApi, queuedBehind: () => number) =>
      lazyTransaction(db.sql, (transaction) =>
        Effect.gen(function*() {
          const result = yield* bot.handle(update.updateId, update.kind, update.payload, calls)
          // Lease the chat's next waiting update to us only when nothing of the chat queues here already.
          const chain = !lifecycle.isDraining() && queuedBehind() === 0
          const request = { update, status: result.status, calls: result.calls, traceId: yield* currentTraceId, chain }
          const finished = yield* transaction.last(inbox.finish(request), inbox.finishAlone(request))
          // PROTOCOL: fencing.
          if (Option.isNone(finished)) return yield* new LeaseLost()
          return { result, finished: finished.value }
        }), db.holdSlot("handler"))

    /** One attempt at `update`: its step, and the exit its span ends with (a recorded failure's). */
    const attempt = Effect.fnUntraced(function*(
      update: Claimed,
      queuedBehind: () => number
    ): Effect.fn.Return<Reported<Step<Claimed>>> {
      const startedAt = performance.now()
      if (update.kind === "callback_query" && Duration.isGreaterThan(callbackMaxAge, Duration.zero)) {
        const age = Duration.millis((yield* Clock.currentTimeMillis) - update.receivedAt)
        if (Duration.isGreaterThan(age, callbackMaxAge)) return { value: yield* expire(update, age), exit: Exit.void }
      }
      // PROTOCOL: recorded-calls. The attempt's Bot API calls: made at once, recorded with a failure.
      const calls = yield* bot.attempt(update.recorded)
      return yield* runAttempt(update, calls, queuedBehind, startedAt).pipe(Effect.onInterrupt(() => Effect.sync(calls.close)))
    })

    // PROTOCOL: attempt-over. The handler runs in a child fiber so that, on timeout, we can say what
    // it was doing before interrupting it (interruption rolls its transaction back).
    const runAttempt = Effect.fnUntraced(function*(
      update: Claimed,
      calls: AttemptApi,
      queuedBehind: () => number,
      startedAt: number
    ): Effect.fn.Return<Reported<Step<Claimed>>> {
      // Taken over elsewhere (its lease lost): this attempt makes no more calls; its commit is fenced.
      yield* inbox.leases.hold(update, calls.close)
      const handler = yield* Effect.forkChild(
        runHandler(update, calls, queuedBehind).pipe(fiberDump.track(`handler of update ${update.updateId} (${update.kind})`)),
        { startImmediately: true }
      )
      // What it was doing when its time ran out, described before it was interrupted.
      let timedOut: string | undefined
      const deadline = startDeadline(() => {
        if (handler.pollUnsafe() !== undefined) return
        timedOut = describeFiber(handler)
        handler.interruptUnsafe()
      })
      const exit = yield* Fiber.await(handler).pipe(
        // On shutdown, roll the handler back before its lease is released.
        Effect.onInterrupt(() => Fiber.interrupt(handler)),
        Effect.trackDuration(Metrics.processingDuration, (duration) => Duration.toSeconds(duration))
      )
      deadline.settle()
      // Whatever of the handler outlived its attempt (a grammY promise keeps running) calls nothing more.
      calls.close()
      // A handler that still ended well (it had finished, or the interruption found it past its
      // commit) counts as done.
      if (timedOut !== undefined && Exit.isFailure(exit)) {
        const message = `timed out after ${Duration.format(config.updateTimeout)}`
        yield* Effect.logError(
          `update ${update.updateId} (${update.kind}) ${message} on attempt ${update.attempts}; it was doing:\n${timedOut}`
        )
        return { value: yield* recordFailure(update, message, calls.record()), exit: Exit.fail(new Cause.TimeoutError(message)) }
      }
      if (Exit.isSuccess(exit)) {
        return { value: yield* recordOutcome(update, exit.value.result, exit.value.finished, startedAt), exit: Exit.void }
      }
      if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.interrupt
      if (Option.exists(Cause.findErrorOption(exit.cause), Predicate.isTagged("LeaseLost"))) {
        yield* Effect.logWarning(`update ${update.updateId}: lease taken over by another instance; left to it`)
        return { value: Step.stopped, exit: Exit.void }
      }
      yield* Effect.logError(`update ${update.updateId} (${update.kind}) failed on attempt ${update.attempts}`, exit.cause)
      return { value: yield* recordFailure(update, Cause.pretty(exit.cause), calls.record(), exit.cause), exit }
    })

    /** Runs one update, in the span of its attempt. */
    const process = (update: Claimed, queuedBehind: () => number): Effect.Effect<Step<Claimed>> =>
      attempt(update, queuedBehind).pipe(
        // Only shutdown interrupts a worker: give the update back without counting the attempt.
        Effect.onInterrupt(() => inbox.release(update).pipe(Effect.ignoreCause)),
        Effect.ensuring(inbox.leases.release(update)),
        withTraceLogs,
        Effect.annotateLogs({ update_id: update.updateId }),
        fiberDump.track(`update ${update.updateId} (${update.kind}) attempt ${update.attempts}`),
        attemptSpan(update)
      )

    // An outcome that could not be recorded: the lease expires and the update runs again.
    const unrecorded = (update: Claimed) => <E, R>(record: Effect.Effect<Step<Claimed>, E, R>) =>
      Effect.catchCause(record, (cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.interrupt
          : Effect.as(
            Effect.logError(
              `could not record the outcome of update ${update.updateId}; its lease will expire and it will be retried`,
              cause
            ),
            Step.stopped
          ))

    // Records the failed run. If the outcome cannot be recorded, the lease expires and the run is redone.
    const recordFailure = (
      update: Claimed,
      error: string,
      calls: ReadonlyArray<RecordedCall>,
      cause: Cause.Cause<unknown> = Cause.empty
    ) =>
      Effect.gen(function*() {
        const infrastructure = isInfrastructureFailure(cause)
        const delay = backoff(update.attempts, { first: RETRY_FIRST, cap: infrastructure ? INFRASTRUCTURE_RETRY_CAP : RETRY_CAP })
        const blocked = blockedBy(cause)
        const outcome = yield* persistently(inbox.fail(update, error, {
          calls,
          skip: Option.isSome(blocked),
          maxAttempts: isInvalidUpdate(cause) ? 0 : config.maxAttempts,
          backoff: delay,
          traceId: yield* currentTraceId,
          counted: !infrastructure
        }))
        if (outcome === undefined) return Step.stopped
        const label = outcome === "retry" ? "retried" : outcome
        yield* Effect.annotateCurrentSpan({ "steadfast.outcome": label })
        yield* Metric.update(processedBy({ outcome: label }), 1)
        if (outcome === "retry") return Step.stopped
        if (Option.isSome(blocked)) {
          yield* Effect.logWarning(`update ${update.updateId} skipped: the chat refuses the bot (${blocked.value.message})`).pipe(
            Effect.annotateLogs({ method: blocked.value.method, chat: update.chatKey })
          )
          return Step.passed
        }
        yield* Effect.logError(`update ${update.updateId} dead-lettered after ${update.attempts} attempt(s)`)
        return Step.passed
      }).pipe(unrecorded(update))

    // A button press whose turn came too late: finished as skipped, without running.
    const expire = (update: Claimed, age: Duration.Duration) =>
      Effect.gen(function*() {
        const reason = `expired: its turn came ${Duration.format(age)} after it arrived (CALLBACK_QUERY_MAX_AGE_SECONDS)`
        const outcome = yield* persistently(inbox.fail(update, reason, {
          calls: [],
          skip: true,
          maxAttempts: config.maxAttempts,
          backoff: Duration.zero,
          traceId: yield* currentTraceId,
          counted: true
        }))
        if (outcome === undefined) return Step.stopped
        yield* Metric.update(processedBy({ outcome: "expired" }), 1)
        yield* Effect.logInfo(`update ${update.updateId} (${update.kind}) skipped: ${reason}`)
        return Step.passed
      }).pipe(unrecorded(update))

    const recordOutcome = (update: Claimed, result: HandleResult, finished: Finished, startedAt: number) =>
      Effect.gen(function*() {
        // The chat's next update runs once these are out, so a chat sees its messages in update order.
        if (finished.calls.length > 0) yield* Effect.timeoutOption(yield* outbox.handOff(finished.calls), config.updateTimeout)
        yield* Effect.annotateCurrentSpan({
          "steadfast.outcome": result.status,
          ...(result.handler === undefined ? {} : { "steadfast.handler": result.handler })
        })
        yield* Metric.update(processedBy({ outcome: result.status }), 1)
        // One line per update for an operator without OpenTelemetry (at debug: off by default).
        yield* Effect.logDebug(`update ${update.updateId} ${result.status}`).pipe(
          Effect.annotateLogs({
            kind: update.kind,
            chat: update.chatKey,
            outcome: result.status,
            duration_ms: Math.round(performance.now() - startedAt),
            ...(result.handler === undefined ? {} : { handler: result.handler })
          })
        )
        return Step.done(finished.next)
      })

    yield* makeChatScheduler<Claimed>({
      what: "update",
      concurrency: config.workerConcurrency,
      shutdownGrace: config.shutdownGrace,
      order: (update) => update.updateId,
      step: process,
      handOff: inbox.handedOff,
      claim: (limit) => inbox.claim(limit, config.maxAttempts),
      release: inbox.release,
      letGo: inbox.leases.release,
      wakeup
    })
  }))
}
