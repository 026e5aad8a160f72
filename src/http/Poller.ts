import { Clock, Duration, Effect, Layer, type Redacted, Schedule } from "effect"
import { AppConfig } from "../Config.ts"
import { isDataError, refusalReason, storableUpdate } from "../db/Jsonb.ts"
import { Inbox } from "../queue/Inbox.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { ALLOWED_UPDATES, chatKeyOf, kindOf } from "../telegram/Update.ts"

/** Seconds one getUpdates long poll may wait on Telegram's side. */
const LONG_POLL_SECONDS = 25
/**
 * An empty answer that came back before this (a proxy or stand-in that does not hold the long
 * poll) waits out the rest of it before the next poll, so the loop cannot spin against the API.
 */
export const MIN_EMPTY_POLL = Duration.seconds(1)

/**
 * BOT_MODE=polling: long-polls getUpdates and stores each update in the inbox, exactly like the
 * webhook does. The offset only moves past updates that are stored, so a crash redelivers them
 * and the inbox drops the duplicates.
 */
export const Poller = {
  layer: (token: Redacted.Redacted<string>) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const config = yield* AppConfig
      const inbox = yield* Inbox
      const botApi = yield* BotApi.make({
        token,
        apiRoot: config.telegramApiRoot,
        callTimeout: Duration.seconds(LONG_POLL_SECONDS + 15)
      })
      // getUpdates is refused while a webhook is set.
      yield* botApi.call("deleteWebhook", { drop_pending_updates: false })

      let offset: number | undefined
      const poll = Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        const updates = yield* botApi.call("getUpdates", {
          timeout: LONG_POLL_SECONDS,
          allowed_updates: [...ALLOWED_UPDATES],
          ...(offset === undefined ? {} : { offset })
        })
        for (const update of updates) {
          const body: Record<string, unknown> = { ...update }
          const kind = kindOf(body)
          yield* inbox.store({
            updateId: update.update_id,
            chatKey: chatKeyOf(body, kind),
            kind,
            ...storableUpdate(JSON.stringify(update), update),
            skipped: kind === "unknown",
            traceparent: null
          }).pipe(
            // As on the webhook: an update refused for its own content can never be stored, and
            // retrying it would stop polling for good. Anything else leaves the offset where it is.
            Effect.catchTag("SqlError", (error) =>
              isDataError(error)
                ? Effect.logError(`update ${update.update_id} refused by PostgreSQL for its content (${refusalReason(error)}); dropped`)
                : Effect.fail(error))
          )
          offset = update.update_id + 1
        }
        if (updates.length === 0) {
          const elapsed = (yield* Clock.currentTimeMillis) - startedAt
          if (elapsed < Duration.toMillis(MIN_EMPTY_POLL)) yield* Effect.sleep(Duration.toMillis(MIN_EMPTY_POLL) - elapsed)
        }
      })
      yield* poll.pipe(
        Effect.catchCause((cause) => Effect.andThen(Effect.logWarning("getUpdates failed; retrying", cause), Effect.sleep("2 seconds"))),
        Effect.repeat(Schedule.forever),
        Effect.forkScoped
      )
    }))
}
