import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, FiberSet, Layer, Metric, Option, Predicate, Semaphore } from "effect"
import type { AttemptApi } from "../bot/AttemptApi.ts"
import { Bot, type HandleResult } from "../bot/Bot.ts"
import { AppConfig, callbackQueryMaxAge } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { isInfrastructureError, persistently } from "../db/Faults.ts"
import { Instance } from "./Instance.ts"
import { lazyTransaction } from "../db/LazyTransaction.ts"
import { backoff } from "./Backoff.ts"
import { makeChatQueues } from "./ChatQueues.ts"
import { makeClaimLoop } from "./ClaimLoop.ts"
import { makeDeadlines } from "./Deadlines.ts"
import { Notifications } from "./Notifications.ts"
import { Lifecycle } from "../Lifecycle.ts"
import { describeFiber, FiberDump } from "../observability/FiberDump.ts"
import * as Metrics from "../observability/Metrics.ts"
import { spanFromTraceparent, withTraceLogs } from "../observability/TraceContext.ts"
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

/**
 * How a run left its chat: finished (with the chat's next update if the finish leased it to us),
 * dead-lettered (the chat goes on), or stopped: retried later, taken over, or not recorded, so
 * nothing after it in the chat may run yet.
 */
type Outcome =
  | { readonly _tag: "Finished"; readonly next: Option.Option<Claimed> }
  | { readonly _tag: "Dead" }
  | { readonly _tag: "Stopped" }
const dead: Outcome = { _tag: "Dead" }
const stopped: Outcome = { _tag: "Stopped" }

/**
 * Worker fibers that run updates: those the inbox hands over from memory (leased when stored, or
 * when their chat's previous update finished) and those claimed from the table (backlogs, retries,
 * a dead instance's work). At most WORKER_CONCURRENCY run at once. All fibers live in this layer's
 * scope: on shutdown the loops stop first, running handlers get `SHUTDOWN_GRACE_MS` to finish, and
 * whatever is still running is interrupted — its transaction rolls back and its lease is returned,
 * so another instance (or the next start) takes it over.
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
    const instance = yield* Instance
    const { inbox: wakeup } = yield* Notifications
    const fiberDump = yield* FiberDump
    const slots = yield* Semaphore.make(config.workerConcurrency)
    const startDeadline = yield* makeDeadlines(config.updateTimeout)

    // Chats running here, each with the updates leased to us that wait behind its running one, in
    // update_id order. One fiber runs a chat's updates one after the other, in one slot.
    const chats = makeChatQueues<Claimed>((update) => update.updateId)
    // Gives an update back to the table: at shutdown once (its lease expires if that fails), while
    // running until it is done (see persistently).
    const giveBack = (update: Claimed) => inbox.release(update).pipe(Effect.ignoreCause, Effect.ensuring(inbox.leases.release(update)))
    const release = (update: Claimed) =>
      persistently(inbox.release(update)).pipe(Effect.ignoreCause, Effect.ensuring(inbox.leases.release(update)))
    // Runs after the workers are gone (finalizers run in reverse): what waited behind them goes back.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(
        chats.giveBackAll(giveBack),
        (handedBack) =>
          Effect.logInfo(`shutdown: ${handedBack} queued update(s) handed back to the table, to run after a restart or elsewhere`)
      )
    )

    const workers = yield* FiberSet.make<void>()
    yield* Effect.addFinalizer(() =>
      FiberSet.size(workers).pipe(
        Effect.flatMap((running) =>
          running === 0
            ? Effect.void
            : Effect.logInfo(`waiting up to ${Duration.format(config.shutdownGrace)} for ${running} running update(s)`)
        ),
        Effect.andThen(Effect.timeoutOption(FiberSet.awaitEmpty(workers), config.shutdownGrace)),
        Effect.flatMap(Option.match({
          onSome: () => Effect.logInfo("shutdown: every running update finished"),
          onNone: () =>
            Effect.flatMap(
              FiberSet.size(workers),
              (left) =>
                Effect.logWarning(
                  `shutdown grace period over; interrupting ${left} running update(s): rolled back and handed back, not counted`
                )
            )
        }))
      )
    )

    // The handler's writes, the update's `done` mark and its calls commit together. The finish is
    // fenced by the lease: if another instance took the update over, it matches no row, this
    // transaction rolls back, and the handler's writes never happened.
    // The transaction, and the handler's pool slot, begin with the handler's first statement: a
    // handler that runs none holds no connection, and its finish shares one statement, in
    // autocommit, with those of other handlers finishing at the same moment.
    const runHandler = (update: Claimed, calls: AttemptApi) =>
      lazyTransaction(db.sql, (transaction) =>
        Effect.gen(function*() {
          const result = yield* bot.handle(update.updateId, update.kind, update.payload, calls)
          // Lease the chat's next waiting update to us only when nothing of the chat queues here already.
          const chain = !lifecycle.isDraining() && chats.waiting(update.chatKey).length === 0
          const request = { update, status: result.status, calls: result.calls, traceId: yield* currentTraceId, chain }
          const finished = yield* transaction.last(inbox.finish(request), inbox.finishAlone(request))
          if (Option.isNone(finished)) return yield* new LeaseLost()
          return { result, finished: finished.value }
        }), db.holdSlot("handler"))

    /** Runs one update. */
    const process = (update: Claimed): Effect.Effect<Outcome> => {
      // What a failed run left behind, set once it is recorded (the failure itself goes on to the span).
      let failed: Outcome = stopped
      // The attempt's Bot API calls: made at once, recorded with a failure so a re-run repeats none.
      let calls: AttemptApi | undefined
      return Effect.gen(function*() {
        const startedAt = performance.now()
        if (update.kind === "callback_query" && Duration.isGreaterThan(callbackMaxAge, Duration.zero)) {
          const age = Duration.millis((yield* Clock.currentTimeMillis) - update.receivedAt)
          if (Duration.isGreaterThan(age, callbackMaxAge)) return yield* expire(update, age)
        }
        calls = yield* bot.attempt(update.recorded)
        // Taken over elsewhere (its lease lost): this attempt makes no more calls; its commit is fenced.
        yield* inbox.leases.hold(update, calls.close)
        // The handler runs in a child fiber so that, on timeout, we can say what it was doing
        // before interrupting it (interruption rolls its transaction back).
        const handler = yield* Effect.forkChild(
          runHandler(update, calls).pipe(fiberDump.track(`handler of update ${update.updateId} (${update.kind})`)),
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
          failed = yield* recordFailure(update, message, calls.record())
          return yield* Effect.fail(new Cause.TimeoutError(message))
        }
        if (Exit.isSuccess(exit)) return yield* recordOutcome(update, exit.value.result, exit.value.finished, startedAt)
        if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.failCause(exit.cause)
        if (Option.exists(Cause.findErrorOption(exit.cause), Predicate.isTagged("LeaseLost"))) {
          yield* Effect.logWarning(`update ${update.updateId}: lease taken over by another instance; left to it`)
          return stopped
        }
        yield* Effect.logError(`update ${update.updateId} (${update.kind}) failed on attempt ${update.attempts}`, exit.cause)
        failed = yield* recordFailure(update, Cause.pretty(exit.cause), calls.record(), exit.cause)
        return yield* Effect.failCause(exit.cause)
      }).pipe(
        // Only shutdown interrupts a worker: give the update back without counting the attempt.
        Effect.onInterrupt(() => {
          calls?.close()
          return inbox.release(update).pipe(Effect.ignoreCause)
        }),
        Effect.ensuring(inbox.leases.release(update)),
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
        Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.sync(() => failed))
      )
    }

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
        if (outcome === undefined) return stopped
        const label = outcome === "retry" ? "retried" : outcome
        yield* Effect.annotateCurrentSpan({ "steadfast.outcome": label })
        yield* Metric.update(processedBy({ outcome: label }), 1)
        if (outcome === "retry") return stopped
        if (Option.isSome(blocked)) {
          yield* Effect.logWarning(`update ${update.updateId} skipped: the chat refuses the bot (${blocked.value.message})`).pipe(
            Effect.annotateLogs({ method: blocked.value.method, chat: update.chatKey })
          )
          return dead
        }
        yield* Effect.logError(`update ${update.updateId} dead-lettered after ${update.attempts} attempt(s)`)
        return dead
      }).pipe(
        Effect.catchCause((recording) =>
          Cause.hasInterruptsOnly(recording)
            ? Effect.failCause(recording)
            : Effect.as(
              Effect.logError(
                `could not record the outcome of update ${update.updateId}; its lease will expire and it will be retried`,
                recording
              ),
              stopped
            )
        )
      )

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
        if (outcome === undefined) return stopped
        yield* Metric.update(processedBy({ outcome: "expired" }), 1)
        yield* Effect.logInfo(`update ${update.updateId} (${update.kind}) skipped: ${reason}`)
        return dead
      })

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
        return { _tag: "Finished", next: finished.next } satisfies Outcome
      })

    /** Runs `update`, then the updates of its chat that queue here, one after the other. */
    const runChat = (update: Claimed): Effect.Effect<void> =>
      Effect.flatMap(process(update), (outcome) =>
        Effect.suspend(() => {
          const queue = chats.waiting(update.chatKey)
          if (outcome._tag === "Finished") Option.map(outcome.next, chats.enqueue)
          const next = outcome._tag === "Finished" || outcome._tag === "Dead" ? queue.shift() : undefined
          if (next !== undefined) return runChat(next)
          // The chat is let go in the same synchronous step that finds nothing left of it here, so an
          // update handed over meanwhile either joined the queue or finds the chat free.
          if (outcome._tag !== "Stopped") {
            chats.letGo(update.chatKey)
            // Dead: its chat may go on, from the table if nothing of it queues here.
            return outcome._tag === "Dead" ? wakeup.signal : Effect.void
          }
          // Stopped: what waited behind goes back to the table, to be claimed in order later: what
          // queued here, what is handed over meanwhile, and its updates handed over but not taken yet.
          // Forgetting makes every update of ours still on its way (stored under our lease just
          // before the stop, and not yet here) count as stale, so it goes back too; and whatever a
          // finish whose commit went unheard may have leased to us counts as another owner's.
          return Effect.andThen(
            instance.forget,
            chats.drain(update.chatKey, release, () => inbox.takeHandedOffOfChatUnsafe(update.chatKey))
          )
        }))

    const startInSlot = (update: Claimed): Effect.Effect<unknown> =>
      FiberSet.run(workers, runChat(update).pipe(Effect.ensuring(recovery.freeSlot)), {
        startImmediately: true
      })

    // Updates leased when they were stored: no claim, no re-read, urgent kinds first. One whose
    // chat runs here queues behind it; any other starts in a slot, taken before the update is, so
    // the next free slot goes to the most urgent update waiting. Taking and starting or queueing
    // cannot be split by shutdown: a leased update is always running, queued here or waiting in
    // the inbox, and each of those gives it back when interrupted.
    const handOffLoop = Effect.forever(Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        yield* restore(slots.take(1))
        while (true) {
          // Taken and placed in one synchronous step: a chat that stops meanwhile cannot miss it.
          const placed = yield* Effect.sync(() => {
            const update = inbox.takeHandedOffUnsafe()
            if (update === undefined) return undefined
            if (chats.isRunning(update.chatKey)) {
              chats.enqueue(update)
              return { queued: update }
            }
            // Leased before the instance forgot: an earlier update of its chat may be lost in the table.
            if (update.owner !== instance.owner()) return { stale: update }
            chats.start(update.chatKey)
            return { start: update }
          })
          if (placed === undefined) {
            yield* recovery.freeSlot
            return yield* restore(inbox.awaitHandedOff)
          }
          if ("stale" in placed) yield* giveBack(placed.stale)
          if ("start" in placed) return yield* startInSlot(placed.start)
        }
      })
    ))

    // Everything else, from the table.
    const recovery = makeClaimLoop({
      what: "updates",
      concurrency: config.workerConcurrency,
      slots,
      claim: (limit) => inbox.claim(limit, config.maxAttempts),
      place: (update) => chats.place(update, startInSlot),
      wakeup
    })
    yield* Effect.forkScoped(handOffLoop)
    yield* Effect.forkScoped(recovery.run)
  }))
}
