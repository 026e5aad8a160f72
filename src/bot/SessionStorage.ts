import type { StorageAdapter } from "grammy"
import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { updateScope } from "./Grammy.ts"
import { storableStringify } from "../db/Jsonb.ts"
import { decodeRows } from "../db/Rows.ts"

/** A session value too large to store: its JSON is over the storage's `maxBytes`. */
export class SessionTooLarge extends Schema.TaggedError<SessionTooLarge>()("SessionTooLarge", {
  key: Schema.String,
  bytes: Schema.Number,
  maxBytes: Schema.Number
}) {
  override get message() {
    return `session "${this.key}" is ${this.bytes} bytes of JSON, over the limit of ${this.maxBytes} bytes (sqlSessionStorage maxBytes)`
  }
}

export interface SqlSessionStorageOptions {
  /**
   * Keeps this storage's keys apart from every other storage's: stored keys are `namespace:key`.
   * Each `session({...})` needs its own namespace (or shares one storage object); `"session"` by default.
   */
  readonly namespace?: string
  /** The largest session, in bytes of JSON; 64 KiB by default. A larger one fails the update. */
  readonly maxBytes?: number
}

export const DEFAULT_SESSION_NAMESPACE = "session"
export const DEFAULT_SESSION_MAX_BYTES = 64 * 1024

// Two storages on one namespace would read each other's values under the same chat key (one
// feature's `initial()` skipped, its fields missing): refused when the second one is made.
const namespacesInUse = new Set<string>()

const decodeSession = decodeRows(Schema.Struct({ value: Schema.Unknown }))

const inTransaction = <A, E>(effect: Effect.Effect<A, E, SqlClient>): Promise<A> => {
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
export const sqlSessionStorage = <T>(options: SqlSessionStorageOptions = {}): StorageAdapter<T> => {
  const namespace = options.namespace ?? DEFAULT_SESSION_NAMESPACE
  const maxBytes = options.maxBytes ?? DEFAULT_SESSION_MAX_BYTES
  if (namespacesInUse.has(namespace)) {
    throw new Error(
      `sqlSessionStorage: the namespace "${namespace}" is already used by another storage; give each session({...}) its own, e.g. sqlSessionStorage({ namespace: "counter" }), or share one storage object`
    )
  }
  namespacesInUse.add(namespace)
  const stored = (key: string) => `${namespace}:${key}`

  return {
    read: (key) =>
      inTransaction(Effect.gen(function*() {
        const sql = yield* SqlClient
        const rows = yield* sql`SELECT value FROM sessions WHERE key = ${stored(key)} FOR UPDATE`.pipe(decodeSession)
        // The value's type is the caller's (grammY's StorageAdapter<T>): what `write` stored for this key.
        return rows[0]?.value as T | undefined
      })),
    write: (key, value) =>
      inTransaction(Effect.gen(function*() {
        const sql = yield* SqlClient
        const json = storableStringify(value)
        const bytes = json === undefined ? 0 : Buffer.byteLength(json)
        if (bytes > maxBytes) return yield* new SessionTooLarge({ key: stored(key), bytes, maxBytes })
        yield* sql`
          INSERT INTO sessions (key, value) VALUES (${stored(key)}, ${json}::jsonb)
          ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()`
      })),
    delete: (key) =>
      inTransaction(Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`DELETE FROM sessions WHERE key = ${stored(key)}`
      }))
  }
}
