import type { StorageAdapter } from "grammy"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { updateScope } from "./Grammy.ts"
import { storableStringify } from "../db/Jsonb.ts"

const inTransaction = <A>(effect: Effect.Effect<A, unknown, SqlClient>): Promise<A> => {
  const scope = updateScope.getStore()
  return scope === undefined
    ? Promise.reject(new Error("steadfast sessions are read and written only while steadfast runs an update"))
    : scope.run(effect)
}

/**
 * grammY session storage in the `sessions` table, through the update's own transaction: a session
 * change commits together with the update's replies and its other writes, or not at all (a
 * handler that throws after changing the session leaves it as it was). The read locks the row, so
 * two updates sharing a session key (per-user keys across chats) run one after the other.
 *
 * Values are stored as jsonb: they must be JSON (as with grammY's own storages); lone surrogates
 * and NUL in strings are replaced by U+FFFD, since jsonb refuses them.
 */
export const sqlSessionStorage = <T>(): StorageAdapter<T> => ({
  read: (key) =>
    inTransaction(Effect.gen(function*() {
      const sql = yield* SqlClient
      const rows = yield* sql<{ readonly value: T }>`SELECT value FROM sessions WHERE key = ${key} FOR UPDATE`
      return rows[0]?.value
    })),
  write: (key, value) =>
    inTransaction(Effect.gen(function*() {
      const sql = yield* SqlClient
      const json = storableStringify(value)
      yield* sql`
        INSERT INTO sessions (key, value) VALUES (${key}, ${json}::jsonb)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()`
    })),
  delete: (key) =>
    inTransaction(Effect.gen(function*() {
      const sql = yield* SqlClient
      yield* sql`DELETE FROM sessions WHERE key = ${key}`
    }))
})
