// A test's own view of a database: a plain `pg` connection outside the app's pool (so looking
// never changes what is looked at), row counts, pg_stat_activity, and waiting for a condition.
import { Duration, Effect, type Scope } from "effect"
import pg from "pg"
import { APPLICATION_NAME } from "../../src/Config.ts"

export interface AppSession {
  readonly state: string | null
  readonly pid: number
  readonly query: string
}

export interface PgProbe {
  readonly query: <Row extends pg.QueryResultRow>(text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>>
  /** The app's sessions on this database: state (`active`, `idle`, `idle in transaction`, ...), pid, last query. */
  readonly appSessions: Effect.Effect<ReadonlyArray<AppSession>>
  /** Counts per inbox status. */
  readonly inboxStatuses: Effect.Effect<Record<string, number>>
}

/** A connection of its own to `url`, closed with the scope. It never takes a slot of the app's pool. */
export const pgProbe = (url: string): Effect.Effect<PgProbe, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(
      Effect.promise(() => {
        const client = new pg.Client({ connectionString: url, application_name: "steadfast-test-probe" })
        // A server that stops under the probe must not crash the test process with an unhandled 'error'.
        client.on("error", () => undefined)
        return client.connect().then(() => client)
      }),
      (client) => Effect.promise(() => client.end().catch(() => undefined))
    )
    const query = <Row extends pg.QueryResultRow>(text: string, params: ReadonlyArray<unknown> = []) =>
      Effect.promise(() => client.query<Row>(text, [...params]).then((result) => result.rows))
    return {
      query,
      appSessions: query<AppSession>(
        `SELECT state, pid, query FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
        [APPLICATION_NAME]
      ),
      inboxStatuses: Effect.map(
        query<{ status: string; n: number }>(`SELECT status, count(*)::int AS n FROM inbox GROUP BY status`),
        (rows) => Object.fromEntries(rows.map((row) => [row.status, row.n]))
      )
    } satisfies PgProbe
  })

/**
 * Re-evaluates `check` every `interval` until `predicate` holds; dies with the last value seen
 * when `timeout` passes. For conditions nothing notifies us about (a row's status, a pool count).
 */
export const waitFor = <A, E, R>(
  what: string,
  check: Effect.Effect<A, E, R>,
  predicate: (value: A) => boolean,
  options: { readonly timeout: Duration.Input; readonly interval?: Duration.Input }
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    let last: { value: A } | undefined
    const loop = Effect.gen(function*() {
      while (true) {
        const value = yield* check
        last = { value }
        if (predicate(value)) return value
        yield* Effect.sleep(options.interval ?? "50 millis")
      }
    })
    return yield* loop.pipe(
      Effect.timeoutOrElse({
        duration: options.timeout,
        orElse: () =>
          Effect.die(
            new Error(
              `timed out after ${Duration.format(Duration.fromInputUnsafe(options.timeout))} waiting for ${what}; last seen: ${
                JSON.stringify(last?.value)
              }`
            )
          )
      })
    )
  })

export interface HeldTransaction {
  readonly query: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<void>
  /** Ends the transaction: the app's statements waiting on its rows go on. */
  readonly rollback: Effect.Effect<void>
}

/**
 * A connection of the test's own with an open transaction. Rows it writes stay uncommitted, so
 * the app's statements on the same keys wait inside their transactions until `rollback`: a
 * handler that is certainly running for as long as the test wants. Rolled back with the scope.
 */
export const holdTransaction = (url: string): Effect.Effect<HeldTransaction, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.promise(async () => {
        const client = new pg.Client({ connectionString: url, application_name: "steadfast-test-blocker" })
        client.on("error", () => undefined)
        await client.connect()
        await client.query("BEGIN")
        return client
      }),
      (client) => Effect.promise(() => client.query("ROLLBACK").then(() => client.end()).catch(() => undefined))
    ),
    (client) => ({
      query: (text, params = []) => Effect.promise(() => client.query(text, [...params]).then(() => undefined)),
      rollback: Effect.promise(() => client.query("ROLLBACK").then(() => undefined))
    })
  )
