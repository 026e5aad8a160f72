import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { lazyTransaction } from "../../src/db/LazyTransaction.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

const Client = Layer.effectDiscard(Effect.flatMap(SqlClient, (sql) => sql`CREATE TABLE notes (note text)`)).pipe(
  Layer.provideMerge(
    Layer.unwrap(Effect.map(
      Effect.promise(() => freshDatabase("lazy_transaction")),
      (url) => PgClient.layer({ url: Redacted.make(url), maxConnections: 4, applicationName: "lazy-test" })
    ))
  )
)

/** True when the statement runs outside a transaction block (autocommit): SAVEPOINT is refused there. */
const startsItsTransaction = Effect.flatMap(SqlClient, (sql) => Effect.map(Effect.exit(sql.unsafe("SAVEPOINT probe")), Exit.isFailure))

const count = (sql: SqlClient, note: string) =>
  Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM notes WHERE note = ${note}`, (rows) => rows[0]?.n ?? 0)

layer(Client, { excludeTestServices: true })("a transaction that begins with its first statement", (it) => {
  it.effect("a body whose only statement is its last runs it alone, in autocommit", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const alone = yield* lazyTransaction(sql, (transaction) => transaction.last(startsItsTransaction))
      assert.isTrue(alone)
    }))

  it.effect("statements before the last share one transaction, committed on success", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const alone = yield* lazyTransaction(sql, (transaction) =>
        Effect.gen(function*() {
          yield* sql`INSERT INTO notes VALUES ('committed')`
          yield* Effect.sleep("20 millis")
          return yield* transaction.last(startsItsTransaction)
        }))
      assert.isFalse(alone, "the last statement ran in the transaction the first one began")
      assert.strictEqual(yield* count(sql, "committed"), 1)
    }))

  it.effect("a failure after a statement rolls it back", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const exit = yield* Effect.exit(
        lazyTransaction(sql, () => Effect.andThen(sql`INSERT INTO notes VALUES ('rolled back')`, Effect.fail("handler failed")))
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(yield* count(sql, "rolled back"), 0)
    }))

  it.effect("an interrupted body rolls back and leaves no session idle in a transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const inserted = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(lazyTransaction(sql, () =>
        Effect.andThen(sql`INSERT INTO notes VALUES ('interrupted')`, Effect.andThen(Deferred.succeed(inserted, undefined), Effect.never))))
      yield* Deferred.await(inserted)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(yield* count(sql, "interrupted"), 0)
      const idle = yield* sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'lazy-test' AND state = 'idle in transaction'`
      assert.strictEqual(idle[0]?.n, 0)
    }))

  it.effect("withTransaction inside the body is a savepoint: its failure undoes only its own statements", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      yield* lazyTransaction(sql, () =>
        Effect.gen(function*() {
          const inner = yield* SqlClient
          yield* inner`INSERT INTO notes VALUES ('outer')`
          const failed = yield* Effect.exit(
            inner.withTransaction(Effect.andThen(inner`INSERT INTO notes VALUES ('inner')`, Effect.fail("inner failed")))
          )
          assert.isTrue(Exit.isFailure(failed) && !Cause.hasInterruptsOnly(failed.cause))
          yield* inner.withTransaction(inner`INSERT INTO notes VALUES ('inner kept')`)
        }))
      assert.deepStrictEqual(
        [yield* count(sql, "outer"), yield* count(sql, "inner"), yield* count(sql, "inner kept")],
        [1, 0, 1]
      )
    }))
})
