import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Duration, Effect, Layer, Queue, Schedule } from "effect"
import { NOTIFY_CHANNEL } from "../db/migrations/Functions.ts"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"
import { Database } from "../db/Database.ts"

/** A wake-up call that coalesces: many signals before a wait wake it once. */
export interface Wakeup {
  readonly signal: Effect.Effect<void>
  /** Waits for a signal, or at most `poll` (the fallback when notifications are lost). */
  readonly wait: (poll: Duration.Input) => Effect.Effect<void>
}

export const makeWakeup = Effect.map(Queue.sliding<void>(1), (queue): Wakeup => ({
  signal: Effect.asVoid(Queue.offer(queue, undefined)),
  wait: (poll) => Effect.asVoid(Effect.timeoutOption(Queue.take(queue), poll))
}))

/**
 * One LISTEN connection shared by the dispatcher and the sender. Notifications only shorten
 * the wait: both loops also poll, so a dropped connection delays work but never loses it.
 */
export class Notifications extends Context.Service<Notifications, {
  readonly inbox: Wakeup
  readonly outbox: Wakeup
}>()("steadfast/queue/Notifications") {
  static readonly layer = Layer.effect(
    Notifications,
    Effect.gen(function*() {
      const db = yield* Database
      const pg = yield* PgClient.PgClient
      const inbox = yield* makeWakeup
      const outbox = yield* makeWakeup
      const lost = repeatedWarning("LISTEN connection lost; polling until it is back")

      const listen = Effect.scoped(Effect.gen(function*() {
        yield* db.holdSlot("background")
        const queue = yield* pg.listen(NOTIFY_CHANNEL)
        yield* lost.recovered
        // Work may have arrived while we were not listening.
        yield* inbox.signal
        yield* outbox.signal
        while (true) {
          const notification = yield* Queue.take(queue)
          yield* notification.payload === "outbox" ? outbox.signal : inbox.signal
        }
      }))
      yield* listen.pipe(
        Effect.tapCause(lost.warn),
        Effect.retry(Schedule.min([Schedule.exponential("200 millis"), Schedule.spaced("5 seconds")])),
        Effect.forkScoped
      )
      return Notifications.of({ inbox, outbox })
    })
  )
}

export const pollInterval = Duration.seconds(1)
