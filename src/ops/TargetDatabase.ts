import { Console, Effect, FileSystem, Layer, Option, Path, Redacted } from "effect"
import { databaseTarget } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { EMBEDDED_DATA_DIR, EmbeddedDatabase } from "../db/EmbeddedDatabase.ts"

/** One command at a time needs one connection; the second covers a transaction plus a lookup. */
const POOL_SIZE = 2

/** The URL without its password, to tell the operator which database a command touches. */
export const describeUrl = (url: string): string => {
  const parsed = new URL(url)
  parsed.password = ""
  return parsed.toString()
}

/**
 * The embedded server under `.data/`. When the service is running in sandbox mode it owns that
 * directory, and a second server cannot start there: connect to the running one instead, found
 * through the port PostgreSQL records in `postmaster.pid` (fourth line). A stale file (the server
 * crashed) fails to connect, and then this command starts the server itself.
 */
const embedded = Layer.unwrap(Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const port = yield* fs.readFileString(path.join(EMBEDDED_DATA_DIR, "postmaster.pid")).pipe(
    Effect.map((text) => Option.filter(Option.fromNullishOr(text.split("\n")[3]?.trim()), (value) => /^\d+$/.test(value))),
    Effect.orElseSucceed(() => Option.none<string>())
  )
  yield* Console.error(`ops: database: embedded PostgreSQL in ${EMBEDDED_DATA_DIR} (DATABASE_URL is not set)`)
  const start = Layer.unwrap(Effect.map(EmbeddedDatabase, (server) => Database.layerUrl(server.url, POOL_SIZE))).pipe(
    Layer.provide(EmbeddedDatabase.layer(EMBEDDED_DATA_DIR))
  )
  if (Option.isNone(port)) return start
  const running = Redacted.make(`postgres://steadfast:steadfast@127.0.0.1:${port.value}/postgres`)
  return Database.layerUrl(running, POOL_SIZE).pipe(Layer.catchCause(() => start))
}))

/** The database the ops commands work on: DATABASE_URL, or else (unset or `embedded`) the embedded one under `.data/`. */
export const TargetDatabase = {
  layer: Layer.unwrap(Effect.map(databaseTarget, (target) =>
    Option.isSome(target) && target.value._tag === "url"
      ? Layer.unwrap(Effect.as(
        Console.error(`ops: database: ${describeUrl(Redacted.value(target.value.url))}`),
        Database.layerUrl(target.value.url, POOL_SIZE)
      ))
      : embedded))
}
