import { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Fiber, Layer, Metric, Option, Redacted, Schema, Semaphore, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { APPLICATION_NAME, AppConfig, type DatabaseTarget } from "../Config.ts"
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
 * waiting is bounded (typed `PoolTimeout`) and used/pending counts are observable.
 */
export class Database extends Context.Service<Database, {
  readonly sql: PgClient.PgClient
  /** Runs `effect` holding one pool slot, waiting at most `wait` for it. */
  readonly withConnection: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    wait?: Duration.Input
  ) => Effect.Effect<A, E | PoolTimeout, R>
  /** Runs `effect` in one transaction on one slot: commit on success, rollback on failure or interruption. */
  readonly transaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    wait?: Duration.Input
  ) => Effect.Effect<A, E | SqlError | PoolTimeout, R>
  /** Holds one slot for the lifetime of the current scope (the LISTEN connection). */
  readonly holdConnection: Effect.Effect<void, PoolTimeout, Scope.Scope>
  readonly stats: Effect.Effect<PoolStats>
}>()("steadfast/db/Database") {
  /** Pool and gate over an already provided `PgClient` of `max` connections. */
  static readonly make = Effect.fnUntraced(function*(max: number, defaultWait: Duration.Input = "5 seconds") {
    const sql = yield* PgClient.PgClient
    const gate = yield* Semaphore.make(max)
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
    yield* publish

    // Interruptible while waiting; once a permit is taken the release is guaranteed.
    const acquire = (wait: Duration.Input | undefined) =>
      Effect.suspend(() => {
        const waitMs = wait === undefined ? defaultWaitMs : Duration.toMillis(Duration.fromInputUnsafe(wait))
        const startedAt = performance.now()
        pending++
        return gate.take(1).pipe(
          Effect.timeoutOption(waitMs),
          Effect.ensuring(Effect.sync(() => void pending--)),
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
                return Effect.as(
                  Effect.andThen(Metric.update(Metrics.connectionWaitTime, (acquiredAt - startedAt) / 1000), publish),
                  acquiredAt
                )
              })
          })),
          Effect.onExit(() => publish)
        )
      })
    const release = (acquiredAt: number) =>
      Effect.andThen(
        gate.release(1),
        Effect.suspend(() => {
          used--
          return Effect.andThen(Metric.update(Metrics.connectionUseTime, (performance.now() - acquiredAt) / 1000), publish)
        })
      )
    const withSlot = <A, E, R>(effect: Effect.Effect<A, E, R>, wait?: Duration.Input) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquire(wait)), (acquiredAt) => Effect.ensuring(restore(effect), release(acquiredAt)))
      )

    return Database.of({
      sql,
      withConnection: withSlot,
      transaction: (effect, wait) => withSlot(sql.withTransaction(effect), wait),
      holdConnection: Effect.asVoid(Effect.acquireRelease(acquire(undefined), release)),
      stats: Effect.sync(() => ({ max, used, idle: max - used, pending, timeouts }))
    })
  })

  /** Pool on `url` with migrations applied. */
  static readonly layerUrl = (url: Redacted.Redacted<string>, max: number) => {
    const parsed = new URL(Redacted.value(url))
    const creation = connectionCreationTimer(decodeURIComponent(parsed.password))
    const client = PgClient.layer({
      url,
      maxConnections: max,
      // Warm connections keep the webhook's insert and the health check off the connect path.
      minConnections: MIN_CONNECTIONS,
      applicationName: APPLICATION_NAME,
      connectTimeout: "5 seconds",
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
    return Layer.effect(Database, Effect.tap(Database.make(max), (db) => runMigrations(db.sql))).pipe(
      Layer.provideMerge(client)
    )
  }

  /** The pool on `target`: DATABASE_URL, or an embedded PostgreSQL under `.data/` started here. */
  static readonly layerTarget = (target: DatabaseTarget, max: number) =>
    target._tag === "url"
      ? Database.layerUrl(target.url, max)
      : Layer.unwrap(Effect.map(EmbeddedDatabase, (embedded) => Database.layerUrl(embedded.url, max))).pipe(
        Layer.provide(EmbeddedDatabase.layer())
      )

  /** The pool on the configured database. */
  static readonly layer = Layer.unwrap(Effect.map(AppConfig, (config) => Database.layerTarget(config.database, config.dbPoolMax)))
}
