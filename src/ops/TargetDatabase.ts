import { Console, Effect, FileSystem, Layer, Option, Path, Redacted } from "effect"
import { databaseTarget } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { EMBEDDED_DATA_DIR, EmbeddedDatabase } from "../db/EmbeddedDatabase.ts"

/** One command at a time needs one connection; the second covers a transaction plus a lookup. */
const POOL_SIZE = 2

/**
 * Which database a command touches: scheme, user, host, port and database name. No password, and
 * no query either: libpq-style parameters may carry one (`?password=`, `?sslpassword=`).
 */
export const describeUrl = (url: string): string => {
  const parsed = new URL(url)
  parsed.password = ""
  parsed.search = ""
  parsed.hash = ""
  return parsed.toString()
}

/**
 * The embedded server under `.data/`. When the service is running in sandbox mode it owns that
 * directory, and a second server cannot start there: connect to the running one instead, found
 * through the port PostgreSQL records in `postmaster.pid` (fourth line). A stale file (the server
 * crashed) fails to connect, and then this command starts the server itself.
 */
const embedded = (migrate: boolean) =>
  Layer.unwrap(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const port = yield* fs.readFileString(path.join(EMBEDDED_DATA_DIR, "postmaster.pid")).pipe(
      Effect.map((text) => Option.filter(Option.fromNullishOr(text.split("\n")[3]?.trim()), (value) => /^\d+$/.test(value))),
      Effect.orElseSucceed(() => Option.none<string>())
    )
    yield* Console.error(`ops: database: embedded PostgreSQL in ${EMBEDDED_DATA_DIR} (DATABASE_URL is not set)`)
    const start = Layer.unwrap(Effect.map(EmbeddedDatabase, (server) => Database.layerUrl(server.url, POOL_SIZE, { migrate }))).pipe(
      Layer.provide(EmbeddedDatabase.layer(EMBEDDED_DATA_DIR))
    )
    if (Option.isNone(port)) return start
    const running = Redacted.make(`postgres://steadfast:steadfast@127.0.0.1:${port.value}/postgres`)
    return Database.layerUrl(running, POOL_SIZE, { migrate }).pipe(Layer.catchCause(() => start))
  }))

const layer = (migrate: boolean) =>
  Layer.unwrap(Effect.map(databaseTarget, (target) =>
    Option.isSome(target) && target.value._tag === "url"
      ? Layer.unwrap(Effect.as(
        Console.error(`ops: database: ${describeUrl(Redacted.value(target.value.url))}`),
        Database.layerUrl(target.value.url, POOL_SIZE, { migrate })
      ))
      : embedded(migrate)))

/**
 * The database the ops commands work on: DATABASE_URL, or else (unset or `embedded`) the embedded
 * one under `.data/`. Commands that change rows bring the schema up to date first; read-only ones
 * (`layerReadOnly`) never migrate, so looking at a database never changes it.
 */
export const TargetDatabase = {
  layer: layer(true),
  layerReadOnly: layer(false)
}
