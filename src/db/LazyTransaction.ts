import { Effect, Exit, Option, Scope, Stream } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import type { PoolTimeout } from "./Database.ts"

/** What the body of a lazy transaction can ask of it. */
export interface LazyTransaction {
  /**
   * Runs the body's last statement: `last` in the transaction if a statement has begun it;
   * otherwise `alone` (by default `last`), in autocommit, which is as atomic as a transaction of
   * one statement and costs no BEGIN and no COMMIT. `alone` need not use this transaction's
   * connection, so it may share a statement with other work.
   */
  readonly last: <A, E, R, A2 extends A = A, E2 = E, R2 = R>(
    last: Effect.Effect<A, E, R>,
    alone?: Effect.Effect<A2, E2, R2>
  ) => Effect.Effect<A, E | E2, R | R2>
}

/** Why a statement was refused: the attempt it belongs to has ended. */
/** PROTOCOL: attempt-over (src/queue/PROTOCOL.md). */
export const ATTEMPT_OVER = "this update's attempt is over (timed out or finished): its transaction takes no more statements"

const savepointClients = new WeakMap<SqlClient, SqlClient>()
let savepoints = 0

/**
 * `sql` as the body of a lazy transaction sees it: `sql.withTransaction` inside the body would look
 * for state that only its own top-level transaction sets up; a savepoint on the lazy transaction
 * (found, like every statement's, through the client's transaction service) is what it means
 * here. One per client, not per transaction: it is the same for all of them.
 */
const savepointClient = (sql: SqlClient): SqlClient => {
  const known = savepointClients.get(sql)
  if (known !== undefined) return known
  const savepoint = <X, XE, XR>(effect: Effect.Effect<X, XE, XR>): Effect.Effect<X, XE | SqlError, XR> =>
    Effect.flatMap(Effect.serviceOption(sql.transactionService), (current) => {
      if (Option.isNone(current)) return sql.withTransaction(effect)
      const [connection] = current.value
      const control = (statement: string) => Effect.asVoid(connection.executeUnprepared(statement, [], undefined))
      return Effect.uninterruptibleMask((restore) => {
        const name = `steadfast_${++savepoints}`
        return Effect.flatMap(control(`SAVEPOINT ${name}`), () =>
          Effect.onExit(restore(effect), (exit) =>
            Exit.isSuccess(exit)
              ? Effect.orDie(control(`RELEASE SAVEPOINT ${name}`))
              : Effect.orDie(Effect.andThen(control(`ROLLBACK TO SAVEPOINT ${name}`), control(`RELEASE SAVEPOINT ${name}`)))))
      })
    })
  const client: SqlClient = Object.assign((...args: Parameters<SqlClient>) => sql(...args), sql, { withTransaction: savepoint })
  savepointClients.set(sql, client)
  return client
}

/**
 * Runs `body` in a transaction that begins with its first statement: BEGIN is sent just before it,
 * COMMIT after the body succeeds, ROLLBACK on failure or interruption, and a body that runs no
 * statement before its `last` costs one round trip instead of three. Statements of `sql` reach the
 * transaction's connection through the client's transaction service, exactly as in
 * `sql.withTransaction`; nested `withTransaction` calls become savepoints on it.
 */
export const lazyTransaction = <A, E, R>(
  sql: SqlClient,
  body: (transaction: LazyTransaction) => Effect.Effect<A, E, R>,
  /**
   * Taken just before the connection and held with it (a pool slot), so a body that runs no
   * statement takes none. Not getting one is a connection failure of the statement that asked.
   */
  slot: Effect.Effect<void, PoolTimeout, Scope.Scope> = Effect.void
): Effect.Effect<A, E | SqlError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.suspend(() => {
      // Made with the connection: a body that runs no statement costs no scope either.
      let scope: Scope.Closeable | undefined
      let connection: Connection | undefined
      let began = false
      let autocommit = false
      // Set once the body has ended: a statement from code that outlived it (a promise of a timed-out
      // grammY handler) must not open a connection nobody would close.
      let over = false

      const slotted = Effect.mapError(
        slot,
        (timeout) => new SqlError({ reason: new ConnectionError({ cause: timeout, message: timeout.message, operation: "reserve" }) })
      )
      const reserve: Effect.Effect<Connection, SqlError> = Effect.suspend(() =>
        over ?
          Effect.fail(new SqlError({ reason: new ConnectionError({ cause: undefined, message: ATTEMPT_OVER, operation: "reserve" }) }))
          : connection !== undefined ?
          Effect.succeed(connection) :
          Effect.map(
            Scope.provide(Effect.andThen(slotted, sql.reserve), scope ??= Scope.makeUnsafe()),
            (reserved) => {
              connection = reserved
              return reserved
            }
          )
      )
      const begin: Effect.Effect<Connection, SqlError> = Effect.suspend(() =>
        began || autocommit
          ? reserve
          : Effect.flatMap(reserve, (reserved) =>
            Effect.map(reserved.executeUnprepared("BEGIN", [], undefined), () => {
              began = true
              return reserved
            }))
      )

      const lazy: Connection = {
        execute: (statement, params, transform) => Effect.flatMap(begin, (c) => c.execute(statement, params, transform)),
        executeRaw: (statement, params) => Effect.flatMap(begin, (c) => c.executeRaw(statement, params)),
        executeStream: (statement, params, transform) =>
          Stream.unwrap(Effect.map(begin, (c) => c.executeStream(statement, params, transform))),
        executeValues: (statement, params) => Effect.flatMap(begin, (c) => c.executeValues(statement, params)),
        executeValuesUnprepared: (statement, params) => Effect.flatMap(begin, (c) => c.executeValuesUnprepared(statement, params)),
        executeUnprepared: (statement, params, transform) => Effect.flatMap(begin, (c) => c.executeUnprepared(statement, params, transform))
      }
      // COMMIT and ROLLBACK run once the body is over, on the connection it began.
      const control = (statement: string) => Effect.suspend(() => Effect.asVoid(connection!.executeUnprepared(statement, [], undefined)))

      const transaction: LazyTransaction = {
        last: <A, E, R, A2 extends A, E2, R2>(effect: Effect.Effect<A, E, R>, alone?: Effect.Effect<A2, E2, R2>) =>
          Effect.suspend((): Effect.Effect<A, E | E2, R | R2> => {
            autocommit = !began
            return autocommit && alone !== undefined ? alone : effect
          })
      }
      return restore(body(transaction)).pipe(
        Effect.provideService(sql.transactionService, [lazy, 0]),
        Effect.provideService(SqlClient, savepointClient(sql)),
        Effect.onExit((exit) => {
          over = true
          if (!began) return Effect.void
          return Exit.isSuccess(exit)
            ? control("COMMIT")
            : Effect.ignoreCause(control("ROLLBACK"))
        }),
        Effect.onExit((exit) => scope === undefined ? Effect.void : Scope.close(scope, exit))
      )
    })
  )
