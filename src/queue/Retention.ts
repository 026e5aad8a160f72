import { Duration, Effect, Layer, Option, Schedule, Schema } from "effect"
import { inboxRetention } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"

const decodeDeleted = decodeRows(Schema.Struct({ status: Schema.String, n: Schema.Number }))

export interface RetentionOptions {
  /** Finished rows older than this are deleted (default 7 days). */
  readonly retention?: Duration.Input
  /** Pause between sweeps (default 1 hour). */
  readonly interval?: Duration.Input
  /** Rows per DELETE statement (default 500). */
  readonly batchSize?: number
}

export interface SweepOptions {
  readonly olderThan: Duration.Duration
  readonly batchSize: number
  /** Also delete dead inbox rows (dead letters an operator could still retry). */
  readonly includeDead: boolean
}

export interface SweepResult {
  readonly inbox: { readonly done: number; readonly skipped: number; readonly dead: number }
  readonly outbox: { readonly sent: number; readonly failed: number }
  readonly batches: number
}

export const DEFAULT_RETENTION = Duration.days(7)
export const DEFAULT_INTERVAL = Duration.hours(1)
export const DEFAULT_BATCH_SIZE = 500

const count = (rows: ReadonlyArray<{ readonly status: string; readonly n: number }>, status: string) =>
  rows.find((row) => row.status === status)?.n ?? 0

/**
 * Deletes finished rows older than `olderThan`: done and skipped updates (dead ones only with
 * `includeDead`), sent and failed outbox calls. Each statement deletes at most `batchSize` rows
 * and holds its pool slot only for that statement, so no lock is held for long and the service's
 * own queries interleave; a table is done when a batch comes back smaller than `batchSize`.
 */
const sweep = Effect.fn("Retention.sweep")(function*(options: SweepOptions) {
  const db = yield* Database
  const sql = db.sql
  const ageMs = Duration.toMillis(options.olderThan)
  const limit = Math.max(1, Math.floor(options.batchSize))
  // Constant text, never input: the literal list keeps the partial index inbox_finished usable.
  const inboxStatuses = sql.literal(options.includeDead ? "('done', 'skipped', 'dead')" : "('done', 'skipped')")

  // `ctid = ANY(ARRAY(...))` is a TID scan; SKIP LOCKED lets two instances sweep side by side.
  // The outer condition is re-checked on the latest row version, so a row an operator
  // requeued meanwhile (dead -> pending) is not deleted.
  const inboxBatch = db.withConnection(sql`
    WITH deleted AS (
      DELETE FROM inbox
      WHERE ctid = ANY(ARRAY(
          SELECT ctid FROM inbox
          WHERE status IN ${inboxStatuses} AND finished_at < now() - ${ageMs} * interval '1 millisecond'
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED))
        AND status IN ${inboxStatuses}
      RETURNING status)
    SELECT status, count(*)::int AS n FROM deleted GROUP BY status`).pipe(decodeDeleted)

  // A failed call has no sent_at; Outbox.fail sets available_at to the time of failure.
  const outboxBatch = db.withConnection(sql`
    WITH deleted AS (
      DELETE FROM outbox
      WHERE ctid = ANY(ARRAY(
          SELECT ctid FROM outbox
          WHERE status IN ('sent', 'failed') AND coalesce(sent_at, available_at) < now() - ${ageMs} * interval '1 millisecond'
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED))
        AND status IN ('sent', 'failed')
      RETURNING status)
    SELECT status, count(*)::int AS n FROM deleted GROUP BY status`).pipe(decodeDeleted)

  const totals = { done: 0, skipped: 0, dead: 0, sent: 0, failed: 0, batches: 0 }
  while (true) {
    const rows = yield* inboxBatch
    totals.batches++
    totals.done += count(rows, "done")
    totals.skipped += count(rows, "skipped")
    totals.dead += count(rows, "dead")
    if (rows.reduce((sum, row) => sum + row.n, 0) < limit) break
  }
  while (true) {
    const rows = yield* outboxBatch
    totals.batches++
    totals.sent += count(rows, "sent")
    totals.failed += count(rows, "failed")
    if (rows.reduce((sum, row) => sum + row.n, 0) < limit) break
  }
  return {
    inbox: { done: totals.done, skipped: totals.skipped, dead: totals.dead },
    outbox: { sent: totals.sent, failed: totals.failed },
    batches: totals.batches
  } satisfies SweepResult
})

/**
 * Sweeps at start-up and then every `interval`. Dead inbox rows are kept: they are the
 * operator's to retry or purge (`npm run ops -- purge --include-dead`).
 */
const layer = (options: RetentionOptions = {}) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const retention = options.retention === undefined ? DEFAULT_RETENTION : Duration.fromInputUnsafe(options.retention)
    const interval = options.interval === undefined ? DEFAULT_INTERVAL : Duration.fromInputUnsafe(options.interval)
    const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE
    if (Duration.isLessThan(retention, Duration.days(1))) {
      yield* Effect.logWarning(
        `retention of ${Duration.format(retention)} is below 1 day: Telegram redelivers an update for up to 24 hours, ` +
          "and one whose inbox row is already gone would be handled again"
      )
    }
    // A sweep that fails while the database is away is an infrastructure failure like the others:
    // one line (stack at debug), then a count per interval.
    const failed = repeatedWarning("retention sweep failed; next attempt after the interval")
    const once = sweep({ olderThan: retention, batchSize, includeDead: false }).pipe(
      Effect.tap(() => failed.recovered),
      Effect.tap((result) => {
        const inbox = result.inbox.done + result.inbox.skipped
        const outbox = result.outbox.sent + result.outbox.failed
        return inbox + outbox === 0
          ? Effect.logDebug("retention: nothing to remove")
          : Effect.logInfo(
            `retention: removed ${inbox} inbox rows (done ${result.inbox.done}, skipped ${result.inbox.skipped}) and ` +
              `${outbox} outbox rows (sent ${result.outbox.sent}, failed ${result.outbox.failed}) ` +
              `older than ${Duration.format(retention)} in ${result.batches} batches`
          )
      }),
      // One failed sweep (database away, pool saturated) must not end the loop.
      Effect.catchCause(failed.warn)
    )
    yield* Effect.forkScoped(Effect.repeat(once, Schedule.spaced(interval)))
  }))

/** `layer` with the period from INBOX_RETENTION (default 7d). */
const layerConfig = Layer.unwrap(Effect.map(
  inboxRetention,
  Option.match({
    onNone: () => layer(),
    onSome: (retention) => layer({ retention })
  })
))

/** Removal of finished inbox and outbox rows once they are older than the retention period. */
export const Retention = {
  /** One sweep now, with its own age and dead-letter choice (the ops `purge` command). */
  sweep,
  layer,
  layerConfig
}
