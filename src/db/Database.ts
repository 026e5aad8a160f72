import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Duration, Effect, Fiber, Layer, Metric, Option, Redacted, Schema, Semaphore, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { APPLICATION_NAME, AppConfig, type DatabaseTarget, RESERVED_CONNECTIONS } from "../Config.ts"
import * as Metrics from "../observability/Metrics.ts"
import { EmbeddedDatabase } from "./EmbeddedDatabase.ts"
import { runMigrations } from "./migrations/Migrations.ts"

/**
 * `db.client.connection.create_time`. @effect/sql-pg keeps its pool private and offers no hook
 * on connection creation, so two points of PgConnection.make (4.0.5) mark it, on the creating
 * fiber: the `password` Effect, documented as run for each connection attempt, just before the
 * socket opens; and the read of `options.types`, its first statement once the session is
 * authenticated and ready. test/observability/Telemetry.test.ts fails if an upgrade moves them.
 */
const connectionCreationTimer = (password: string) => {
  const startedAt = new WeakMap<Fiber.Fiber<unknown, unknown>, number>()
  return {
    started: Effect.withFiber((fiber) => {
      startedAt.set(fiber, performance.now())
      return Effect.succeed(Redacted.make(password))
    }),
    finished: () => {
      const fiber = Fiber.getCurrent()
      const started = fiber === undefined ? undefined : startedAt.get(fiber)
      if (fiber === undefined || started === undefined) return
      startedAt.delete(fiber)
      Effect.runSync(Metric.update(Metrics.connectionCreateTime, (performance.now() - started) / 1000))
    }
  }
}

/** Connections the pool keeps open even when idle. */
const MIN_CONNECTIONS = 2

/**
 * Who uses a connection. Each workload has its own share of the pool:
 * - `lease` (lease renewal) and `probe` (the readiness probe): one connection each, outside
 *   `DB_POOL_MAX` and outside the gate, so no burst of ingress, handlers or background work can
 *   ever make a lease expire or /health read as "database down";
 * - `handler`: update transactions (from their first statement), the batched finishes of
 *   handlers that wrote nothing, and a worker's own bookkeeping after a run (fail, release), at
 *   most `DB_POOL_MAX - RESERVED_CONNECTIONS` at once;
 * - `background`: the LISTEN connection, claim loops, senders' bookkeeping, retention, at most
 *   `BACKGROUND_CONNECTIONS` at once;
 * - `ingress` (the inbox insert) and `health`: any free connection, and so always the ones the
 *   other two can never take.
 */
export type Workload = "handler" | "background" | "ingress" | "health" | "lease" | "probe"

/** Connections beyond DB_POOL_MAX, one for each dedicated workload (`lease`, `probe`). */
export const DEDICATED_CONNECTIONS = 2

/** The LISTEN connection and one for every loop's short statements. */
const BACKGROUND_CONNECTIONS = 2

/**
 * Statement time limits of the workloads that must give up sooner than a handler transaction
 * (whose limit, UPDATE_TIMEOUT_MS, is the connection default). Each costs a transaction and a
 * `SET LOCAL` (three round trips). Background statements pay it too: one stuck on a lock (a
 * rolling migration) or a slow ANALYZE gives its connection back after 5 s instead of holding the
 * claim loops and senders' bookkeeping behind it; a lease renewal gives up after 2 s and is tried
 * again on its next round, well inside the lease.
 */
export const STATEMENT_LIMIT_MS: Partial<Record<Workload, number>> = {
  ingress: 3_000,
  health: 80,
  probe: 80,
  background: 5_000,
  lease: 2_000
}

/** Waiting for a pool connection took longer than allowed: the pool is saturated. */
export class PoolTimeout extends Schema.TaggedError<PoolTimeout>()("PoolTimeout", {
  waitedMs: Schema.Number
}) {
  override get message() {
    return `no database connection became free within ${this.waitedMs} ms`
  }
}

export interface PoolStats {
  readonly max: number
  readonly used: number
  readonly idle: number
  readonly pending: number
  readonly timeouts: number
}

/**
 * The PostgreSQL pool and its admission gate. `@effect/sql-pg` keeps its pool private and
 * lets callers wait forever, so every use of a connection passes a semaphore sized to the pool:
 * waiting is bounded (typed `PoolTimeout`) and used/pending counts are observable. Handlers and
 * background work also pass a semaphore of their own share (see `Workload`), which is what keeps
 * connections free for the webhook's insert and the health check however busy the rest is.
 */
/** How much longer than a statement a transaction may sit idle before the server ends it. */
const IDLE_IN_TRANSACTION_MARGIN_MS = 5_000

export class Database extends Context.Service<Database, {
  readonly sql: PgClient.PgClient
  /**
   * Runs `effect` holding one pool slot of `workload`'s share (`background` unless said),
   * waiting at most `wait` for it. Statements of `ingress` and `health` run under their own time
   * limit, in a transaction of their own; a statement over its limit fails with `SqlError`
   * (reason `StatementTimeoutError`).
   */
  readonly withConnection: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    wait?: Duration.Input,
    workload?: Workload
  ) => Effect.Effect<A, E | SqlError | PoolTimeout, R>
  /** Runs `effect` in one transaction on one `handler` slot: commit on success, rollback on failure or interruption. */
  readonly transaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    wait?: Duration.Input
  ) => Effect.Effect<A, E | SqlError | PoolTimeout, R>
  /**
   * Holds one slot of `workload` for the lifetime of the current scope (the LISTEN connection; a
   * handler's transaction from its first statement on).
   */
  readonly holdSlot: (workload: Workload) => Effect.Effect<void, PoolTimeout, Scope.Scope>
  readonly stats: Effect.Effect<PoolStats>
}>()("steadfast/db/Database") {
  /**
   * Pool and gate over an already provided `PgClient` of `max` connections whose sessions run
   * with a `statement_timeout` of `sessionLimitMs` (none when absent).
   */
  static readonly make = Effect.fnUntraced(function*(max: number, options: {
    readonly defaultWait?: Duration.Input
    readonly sessionLimitMs?: number | undefined
  } = {}) {
    const sql = yield* PgClient.PgClient
    const defaultWait = options.defaultWait ?? "5 seconds"
    const sessionLimitMs = options.sessionLimitMs ?? Infinity
    const gate = yield* Semaphore.make(max)
    // Handlers and background work each wait for their share first, then for the pool; ingress
    // and health only for the pool. The two shares leave RESERVED_CONNECTIONS - BACKGROUND_CONNECTIONS
    // that only ingress and health can take.
    const shares: Record<Workload, Semaphore.Semaphore | undefined> = {
      handler: yield* Semaphore.make(Math.max(1, max - RESERVED_CONNECTIONS)),
      background: yield* Semaphore.make(Math.min(max, BACKGROUND_CONNECTIONS)),
      ingress: undefined,
      health: undefined,
      lease: undefined,
      probe: undefined
    }
    // The dedicated workloads wait only for their own connection, never for the gate: the client
    // has DEDICATED_CONNECTIONS more than the gate lets the others use.
    const dedicated: Partial<Record<Workload, Semaphore.Semaphore>> = {
      lease: yield* Semaphore.make(1),
      probe: yield* Semaphore.make(1)
    }
    const withLimit = <A, E, R>(effect: Effect.Effect<A, E, R>, workload: Workload) => {
      const limitMs = STATEMENT_LIMIT_MS[workload]
      return limitMs === undefined || limitMs >= sessionLimitMs
        ? effect
        : sql.withTransaction(Effect.andThen(sql.unsafe(`SET LOCAL statement_timeout = ${limitMs}`), effect))
    }
    let used = 0
    let pending = 0
    let timeouts = 0
    const defaultWaitMs = Duration.toMillis(Duration.fromInputUnsafe(defaultWait))

    const publish = Effect.suspend(() =>
      Effect.all([
        Metric.update(Metrics.connectionUsed, used),
        Metric.update(Metrics.connectionIdle, max - used),
        Metric.update(Metrics.connectionPending, pending)
      ], { discard: true })
    )
    yield* Metric.update(Metrics.connectionMax, max)
    yield* Metric.update(Metrics.connectionIdleMin, MIN_CONNECTIONS)
    // Nothing closes idle connections below the pool's size: every open one may be idle.
    yield* Metric.update(Metrics.connectionIdleMax, max)
    yield* publish

    // Pending counts waits for the pool only: waiting for a share is a workload's own backpressure
    // (background work queues on its two connections by design), not a saturated pool.
    const takePool = Effect.suspend(() => {
      pending++
      return Effect.ensuring(gate.take(1), Effect.sync(() => void pending--))
    })
    // The share's permit goes back if the wait for the pool's is interrupted (timed out).
    const take = (share: Semaphore.Semaphore | undefined) =>
      share === undefined ?
        takePool :
        Effect.uninterruptibleMask((restore) =>
          Effect.andThen(restore(share.take(1)), restore(takePool).pipe(Effect.onInterrupt(() => share.release(1))))
        )

    // Free permits are taken at once: no timer, no race, on the common path.
    const takeIfFree = (share: Semaphore.Semaphore | undefined) =>
      share === undefined ?
        gate.takeIfAvailable(1) :
        Effect.flatMap(share.takeIfAvailable(1), (shared) =>
          !shared ?
            Effect.succeed(false) :
            Effect.flatMap(gate.takeIfAvailable(1), (pooled) => pooled ? Effect.succeed(true) : Effect.as(share.release(1), false)))

    // Interruptible while waiting; once a permit is taken the release is guaranteed.
    const acquire = (wait: Duration.Input | undefined, workload: Workload) =>
      Effect.suspend(() => {
        const waitMs = wait === undefined ? defaultWaitMs : Duration.toMillis(Duration.fromInputUnsafe(wait))
        const startedAt = performance.now()
        const share = shares[workload]
        return Effect.flatMap(takeIfFree(share), (taken): Effect.Effect<Option.Option<unknown>> =>
          taken ? Effect.succeedSome(undefined) : Effect.timeoutOption(take(share), waitMs)).pipe(
            Effect.flatMap(Option.match({
              onNone: () =>
                Effect.suspend(() => {
                  timeouts++
                  return Effect.andThen(
                    Metric.update(Metrics.connectionTimeouts, 1),
                    Effect.fail(new PoolTimeout({ waitedMs: waitMs }))
                  )
                }),
              onSome: () =>
                Effect.suspend(() => {
                  used++
                  const acquiredAt = performance.now()
                  return Effect.as(Metric.update(Metrics.connectionWaitTime, (acquiredAt - startedAt) / 1000), acquiredAt)
                })
            })),
            Effect.onExit(() =>
              publish
            )
          )
      })
    const release = (acquiredAt: number, workload: Workload) =>
      Effect.andThen(
        Effect.andThen(gate.release(1), shares[workload]?.release(1) ?? Effect.void),
        Effect.suspend(() => {
          used--
          return Effect.andThen(Metric.update(Metrics.connectionUseTime, (performance.now() - acquiredAt) / 1000), publish)
        })
      )
    const withShared = <A, E, R>(effect: Effect.Effect<A, E, R>, wait: Duration.Input | undefined, workload: Workload) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquire(wait, workload)), (acquiredAt) => Effect.ensuring(restore(effect), release(acquiredAt, workload)))
      )
    // A dedicated connection: its own permit only, not counted in the pool's figures.
    const withOwn = <A, E, R>(own: Semaphore.Semaphore, effect: Effect.Effect<A, E, R>, wait: Duration.Input | undefined) =>
      Effect.uninterruptibleMask((restore) => {
        const waitMs = wait === undefined ? defaultWaitMs : Duration.toMillis(Duration.fromInputUnsafe(wait))
        return Effect.flatMap(
          restore(Effect.timeoutOption(own.take(1), waitMs)),
          (taken): Effect.Effect<A, E | PoolTimeout, R> =>
            Option.isNone(taken) ? Effect.fail(new PoolTimeout({ waitedMs: waitMs })) : Effect.ensuring(restore(effect), own.release(1))
        )
      })
    const withSlot = <A, E, R>(effect: Effect.Effect<A, E, R>, wait: Duration.Input | undefined, workload: Workload) => {
      const own = dedicated[workload]
      return own === undefined ? withShared(effect, wait, workload) : withOwn(own, effect, wait)
    }

    return Database.of({
      sql,
      withConnection: (effect, wait, workload = "background") => withSlot(withLimit(effect, workload), wait, workload),
      transaction: (effect, wait) => withSlot(sql.withTransaction(effect), wait, "handler"),
      holdSlot: (workload) =>
        Effect.asVoid(Effect.acquireRelease(acquire(undefined, workload), (acquiredAt) => release(acquiredAt, workload))),
      stats: Effect.sync(() => ({ max, used, idle: max - used, pending, timeouts }))
    })
  })

  /**
   * Pool on `url` with migrations applied (unless `migrate` is false: the ops CLI's read-only
   * commands). `statementTimeout` is every session's default `statement_timeout` (set at connect,
   * so it costs no round trip).
   */
  static readonly layerUrl = (
    url: Redacted.Redacted<string>,
    max: number,
    options: { readonly statementTimeout?: Duration.Input; readonly migrate?: boolean } = {}
  ) => {
    const parsed = new URL(Redacted.value(url))
    const sessionLimitMs = options.statementTimeout === undefined
      ? undefined
      : Duration.toMillis(Duration.fromInputUnsafe(options.statementTimeout))
    const creation = connectionCreationTimer(decodeURIComponent(parsed.password))
    const client = PgClient.layer({
      url,
      maxConnections: max + DEDICATED_CONNECTIONS,
      // Warm connections keep the webhook's insert and the health check off the connect path.
      minConnections: MIN_CONNECTIONS,
      applicationName: APPLICATION_NAME,
      connectTimeout: "5 seconds",
      // The backstop of PROTOCOL "attempt-over": a transaction left open (nothing should ever leave
      // one) is ended by the server, its locks with it, a little after its statements' own limit.
      ...(sessionLimitMs === undefined ? {} : {
        startupParameters: {
          statement_timeout: String(sessionLimitMs),
          idle_in_transaction_session_timeout: String(sessionLimitMs + IDLE_IN_TRANSACTION_MARGIN_MS)
        }
      }),
      // Span attributes come from these options, not from the URL.
      host: parsed.hostname,
      port: Number(parsed.port || 5432),
      database: decodeURIComponent(parsed.pathname.slice(1)) || "postgres",
      password: creation.started,
      get types() {
        creation.finished()
        return undefined
      }
    })
    const migrate = options.migrate ?? true
    return Layer.effect(
      Database,
      Effect.tap(Database.make(max, { sessionLimitMs }), (db) => migrate ? runMigrations(db.sql) : Effect.void)
    ).pipe(
      Layer.provideMerge(client)
    )
  }

  /** The pool on `target`: DATABASE_URL, or an embedded PostgreSQL under `.data/` started here. */
  static readonly layerTarget = (
    target: DatabaseTarget,
    max: number,
    options: { readonly statementTimeout?: Duration.Input } = {}
  ) =>
    target._tag === "url"
      ? Database.layerUrl(target.url, max, options)
      : Layer.unwrap(Effect.map(EmbeddedDatabase, (embedded) => Database.layerUrl(embedded.url, max, options))).pipe(
        Layer.provide(EmbeddedDatabase.layer())
      )

  /**
   * The pool on the configured database. Sessions default to the handlers' statement limit;
   * workloads with a shorter one set theirs per transaction.
   */
  static readonly layer = Layer.unwrap(
    Effect.map(AppConfig, (config) => Database.layerTarget(config.database, config.dbPoolMax, { statementTimeout: config.updateTimeout }))
  )
}
