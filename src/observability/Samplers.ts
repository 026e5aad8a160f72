import { Effect, Layer, Metric, Schedule } from "effect"
import { Inbox } from "../queue/Inbox.ts"
import { OutboxWaiting } from "../queue/OutboxWaiting.ts"
import * as Metrics from "./Metrics.ts"

const SAMPLE_EVERY = "5 seconds"

/**
 * Gauges that need a look at the database: inbox and outbox backlog, the oldest pending update's
 * age, dead letters, calls waiting to be retried and the oldest one's age. One cheap query every
 * few seconds; a
 * failure (database down) skips a sample and never stops the fiber.
 */
export const Samplers = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    const inbox = yield* Inbox
    const outboxWaiting = yield* OutboxWaiting
    // A counter appears in the export only once it was updated: start these at 0 so that a
    // dashboard sees "no timeouts / no 429s yet" rather than a missing series.
    yield* Metric.update(Metrics.connectionTimeouts, 0)
    yield* Metric.update(Metrics.botApiRateLimited, 0)
    yield* Metric.update(Metrics.outboxCallsFailed, 0)
    yield* Metric.update(Metrics.outboxCallsDiscarded, 0)
    const sample = Effect.gen(function*() {
      const backlog = yield* inbox.backlog("1 second")
      yield* Metric.update(Metrics.inboxBacklog, backlog.pending)
      yield* Metric.update(Metrics.inboxOldestAge, backlog.oldestSeconds)
      yield* Metric.update(Metrics.inboxDead, backlog.dead)
      yield* Metric.update(Metrics.outboxBacklog, backlog.outbox)
    }).pipe(Effect.catchCause(() => Effect.void))
    // Apart from the inbox's sample, so that either one failing does not hide the other.
    const sampleOutbox = outboxWaiting.sample.pipe(
      Effect.flatMap((waiting) =>
        Effect.andThen(
          Metric.update(Metrics.outboxWaiting, waiting.retrying),
          Metric.update(Metrics.outboxOldestAge, waiting.oldestSeconds)
        )
      ),
      Effect.catchCause(() => Effect.void)
    )

    yield* Effect.andThen(sample, sampleOutbox).pipe(Effect.repeat(Schedule.spaced(SAMPLE_EVERY)), Effect.forkScoped)
  }))
}
