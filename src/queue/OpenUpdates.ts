import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { AppConfig } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"

/** How often the open count is refreshed: the webhook reads a number, never the database. */
export const REFRESH_OPEN_EVERY = "1 second"

const Count = Schema.Struct({ n: Schema.Number })
const decodeCount = decodeRows(Count)

/**
 * The inbox's open (pending or processing) updates against MAX_OPEN_UPDATES. In a flood the
 * inbox would otherwise grow without limit and replies go out hours late; past the cap the
 * webhook answers 503 with Retry-After, and Telegram keeps the updates and slows down. The count
 * is refreshed by one fiber about once a second and stops at the cap (`LIMIT`), so its cost is
 * bounded however large the backlog; a failed refresh keeps the last count.
 */
export class OpenUpdates extends Context.Service<OpenUpdates, {
  readonly max: number
  /** Whether the last count reached the cap (at most about a second old). */
  readonly full: () => boolean
}>()("steadfast/queue/OpenUpdates") {
  static readonly layer = Layer.effect(
    OpenUpdates,
    Effect.gen(function*() {
      const config = yield* AppConfig
      const db = yield* Database
      const max = config.maxOpenUpdates
      let open = 0
      const count = db.withConnection(
        db.sql`SELECT count(*)::int AS n FROM (
          SELECT 1 FROM inbox WHERE status IN ('pending', 'processing') LIMIT ${max}) AS capped`.pipe(decodeCount),
        "1 second",
        // Ingress's class: any free connection (never behind background work) and a 3 s limit
        // that a count stopped at the cap stays well inside.
        "ingress"
      )
      const refresh = count.pipe(
        Effect.tap((rows) => Effect.sync(() => void (open = rows[0]?.n ?? open))),
        Effect.catchCause((cause) => Effect.logDebug("counting open updates failed; keeping the last count", cause))
      )
      yield* refresh
      yield* refresh.pipe(Effect.repeat(Schedule.spaced(REFRESH_OPEN_EVERY)), Effect.forkScoped)
      return OpenUpdates.of({ max, full: () => open >= max })
    })
  )
}
