// The whole app in-process on a fresh database, with the faulty test handlers in front of the
// shipped ones, and every log line captured so a test can check what was reported.
import { Cause, Context, Effect, Latch, Layer, Logger, type Scope } from "effect"
import { Database } from "../../src/db/Database.ts"
import { BotApiRecorder } from "./BotApiRecorder.ts"
import { faultyThenShipped, makeProbe, MARKS_TABLE_DDL, type Probe } from "./handlers/FaultyHandlers.ts"
import { baseUrl, testAppLayer } from "./TestApp.ts"
import { freshDatabase, type PgProbe, pgProbe } from "./TestDatabase.ts"
import { eventually } from "./Eventually.ts"

export interface CapturedLog {
  readonly level: string
  readonly message: string
  /** `Cause.pretty` of the logged cause; empty when none was logged. */
  readonly cause: string
}

export interface LogCapture {
  readonly logger: Logger.Logger<unknown, void>
  readonly entries: ReadonlyArray<CapturedLog>
  /** Waits until a line matching `predicate` was logged. */
  readonly await: (what: string, predicate: (log: CapturedLog) => boolean, timeout?: `${number} seconds`) => Effect.Effect<CapturedLog>
}

export const makeLogCapture = (): LogCapture => {
  const entries: Array<CapturedLog> = []
  const logger = Logger.make<unknown, void>((options) => {
    const parts = Array.isArray(options.message) ? options.message : [options.message]
    entries.push({
      level: options.logLevel,
      message: parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join(" "),
      cause: options.cause.reasons.length === 0 ? "" : Cause.pretty(options.cause)
    })
  })
  return {
    logger,
    entries,
    await: (what, predicate, timeout = "20 seconds") =>
      Effect.map(
        eventually(`a log line: ${what}`, Effect.sync(() => entries.find(predicate)), (found) => found !== undefined, { timeout }),
        (found) => found!
      )
  }
}

export interface FaultyApp {
  readonly databaseUrl: string
  readonly base: string
  readonly pg: PgProbe
  readonly probe: Probe
  /** Closed at start: `/latch` handlers wait on it until the test opens it. */
  readonly latch: Latch.Latch
  readonly logs: LogCapture
  readonly db: Database["Service"]
  readonly standIn: BotApiRecorder["Service"]
}

/**
 * Starts the app for the rest of the current scope. `env` adds to the webhook-mode test
 * environment; `quiet` keeps log lines out of the console (they are still captured).
 */
export const startFaultyApp = (
  label: string,
  env: Record<string, string>,
  options: { readonly quiet?: boolean } = {}
): Effect.Effect<FaultyApp, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const databaseUrl = yield* Effect.promise(() => freshDatabase(label))
    const pg = yield* pgProbe(databaseUrl)
    yield* pg.query(MARKS_TABLE_DDL)
    const probe = yield* makeProbe
    const latch = yield* Latch.make(false)
    const handlers = faultyThenShipped(probe, "app", latch)
    const logs = makeLogCapture()
    const app = yield* Layer.build(
      testAppLayer({ databaseUrl, env, handlers }).pipe(
        Layer.provide(Logger.layer([logs.logger], { mergeWithExisting: options.quiet !== true }))
      )
    )
    return {
      databaseUrl,
      base: yield* Effect.provideContext(baseUrl, app),
      pg,
      probe,
      latch,
      logs,
      db: Context.get(app, Database),
      standIn: Context.get(app, BotApiRecorder)
    } satisfies FaultyApp
  })

/**
 * Waits until the pool is idle: no waiters and one slot in use, the one the LISTEN connection
 * holds for the app's lifetime. A leaked slot keeps `used` above 1 for good.
 */
export const awaitIdlePool = (db: Database["Service"], timeout: `${number} seconds` = "10 seconds") =>
  eventually("an idle pool (only the LISTEN connection's slot in use)", db.stats, (stats) => stats.used === 1 && stats.pending === 0, {
    timeout
  })
