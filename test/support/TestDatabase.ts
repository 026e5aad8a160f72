// The test kit's one way to read a database: a pool of the test's own (outside the app's pool,
// so looking never changes what is looked at), plus dedicated sessions for holding locks and
// transactions open.
import { inject } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Schema, type Scope } from "effect"
import pg from "pg"
import { APPLICATION_NAME } from "../../src/Config.ts"
import { createDatabase } from "./EmbeddedCluster.ts"
import { eventually } from "./Eventually.ts"

let counter = 0

/** A new, empty database on the run's shared PostgreSQL server, unique to the calling test file. */
export const freshDatabase = (label: string): Promise<string> =>
  createDatabase(inject("databaseUrl"), `t_${label.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}_${process.pid}_${++counter}`)

export interface AppSession {
  readonly state: string | null
  readonly pid: number
  readonly query: string
}

export interface PgProbe {
  readonly url: string
  /** Runs one statement; the rows as the driver returns them. */
  readonly query: <Row extends pg.QueryResultRow>(text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>>
  /** Runs one statement and decodes its rows (cast bigint columns to text or int in the query). */
  readonly rows: <A>(schema: Schema.Decoder<A>, text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>>
  /** The app's sessions on this database: state (`active`, `idle`, `idle in transaction`, ...), pid, last query. */
  readonly appSessions: Effect.Effect<ReadonlyArray<AppSession>>
  /** Counts per inbox status. */
  readonly inboxStatuses: Effect.Effect<Record<string, number>>
}

/**
 * A small pool of the test's own on `url`, closed with the scope. It never takes a slot of the
 * app's pool, and it reconnects after a server restart.
 */
export const pgProbe = (url: string): Effect.Effect<PgProbe, never, Scope.Scope> =>
  Effect.gen(function*() {
    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const pool = new pg.Pool({ connectionString: url, application_name: "steadfast-test-probe", max: 4 })
        // A server that stops under the probe must not crash the test process with an unhandled 'error'.
        pool.on("error", () => undefined)
        return pool
      }),
      (pool) => Effect.promise(() => pool.end().catch(() => undefined))
    )
    const query = <Row extends pg.QueryResultRow>(text: string, params: ReadonlyArray<unknown> = []) =>
      Effect.promise(() => pool.query<Row>(text, [...params]).then((result) => result.rows))
    return {
      url,
      query,
      rows: (schema, text, params) => Effect.orDie(Effect.flatMap(query(text, params), Schema.decodeUnknownEffect(Schema.Array(schema)))),
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

/** The probe on the database of an app a test gets as a layer (`Effect.provide(...)`), where the test never sees the URL. */
export class AppDatabase extends Context.Service<AppDatabase, PgProbe>()("test/AppDatabase") {
  static readonly layer = (url: string) => Layer.effect(AppDatabase, pgProbe(url))
}

export const InboxRow = Schema.Struct({
  update_id: Schema.String,
  chat_key: Schema.String,
  kind: Schema.String,
  status: Schema.String,
  attempts: Schema.Number,
  last_error: Schema.NullOr(Schema.String),
  finished_at: Schema.NullOr(Schema.Date),
  payload: Schema.Unknown
})

/** The inbox row of `updateId`, if there is one. */
export const inboxRow = (pg: PgProbe, updateId: number) =>
  Effect.map(
    pg.rows(
      InboxRow,
      `SELECT update_id::text, chat_key, kind, status, attempts, last_error, finished_at, payload FROM inbox WHERE update_id = $1`,
      [updateId]
    ),
    (rows) => rows[0]
  )

/** Waits until the update's inbox row has `status`. */
export const awaitStatus = (pg: PgProbe, updateId: number, status: string, timeout: `${number} seconds` = "30 seconds") =>
  Effect.map(
    eventually(`update ${updateId} to be ${status}`, inboxRow(pg, updateId), (row) => row?.status === status, { timeout }),
    (row) => row!
  )

export interface Session {
  /** Runs one statement on this session. */
  readonly query: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<void>
}

/**
 * One connection of the test's own, for what lives in a session: an open transaction, an
 * advisory lock. Rolled back and closed with the scope.
 */
export const pgSession = (url: string): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.promise(async () => {
        const client = new pg.Client({ connectionString: url, application_name: "steadfast-test-blocker" })
        client.on("error", () => undefined)
        await client.connect()
        return client
      }),
      (client) => Effect.promise(() => client.query("ROLLBACK").then(() => client.end()).catch(() => undefined))
    ),
    (client) => ({ query: (text, params = []) => Effect.promise(() => client.query(text, [...params]).then(() => undefined)) })
  )

export interface HeldTransaction extends Session {
  /** Ends the transaction: the app's statements waiting on its rows go on. */
  readonly rollback: Effect.Effect<void>
}

/**
 * A session with an open transaction. Rows it writes stay uncommitted, so the app's statements
 * on the same keys wait inside their transactions until `rollback`: a handler that is certainly
 * running for as long as the test wants.
 */
export const holdTransaction = (url: string): Effect.Effect<HeldTransaction, never, Scope.Scope> =>
  Effect.gen(function*() {
    const session = yield* pgSession(url)
    yield* session.query("BEGIN")
    return { ...session, rollback: session.query("ROLLBACK") }
  })

/** The tag of a failure's `SqlError` reason (`StatementTimeoutError`, …), if the exit failed with one. */
export const sqlErrorReason = (exit: Exit.Exit<unknown, unknown>): string | undefined =>
  Exit.isFailure(exit)
    ? exit.cause.reasons.flatMap((reason) =>
      reason._tag === "Fail" &&
        Schema.is(Schema.Struct({ _tag: Schema.Literal("SqlError"), reason: Schema.Struct({ _tag: Schema.String }) }))(reason.error)
        ? [reason.error.reason._tag]
        : []
    )[0]
    : undefined
