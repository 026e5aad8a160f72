import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer } from "effect"
import { fileURLToPath } from "node:url"
import { FATAL_SHUTDOWN_BOUND } from "../../src/Lifecycle.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase, pgProbe, holdTransaction } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const UPDATE_ID = 78_001
const USER_ID = 978_001

const fatalTrigger = fileURLToPath(new URL("../support/FatalTrigger.ts", import.meta.url))

describe("SIGUSR2 fiber dump", () => {
  it.live(
    "SIGUSR2 logs the stuck update's fiber and stops nothing: the process lives on and the update is answered once unblocked",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("fiber_dump"))
        // A long handler timeout: the update must still be running when the dump is taken.
        // Pretty lines: the dump is read as text, its entries one per line.
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url, { UPDATE_TIMEOUT_MS: "120000", LOG_FORMAT: "pretty" }))
        const probe = yield* pgProbe(databaseUrl)

        // An uncommitted users row makes `/start`'s INSERT for this user wait inside its
        // transaction, so its worker fiber is certainly running when the signal arrives.
        const blocker = yield* holdTransaction(databaseUrl)
        yield* blocker.query("INSERT INTO users (telegram_id) VALUES ($1)", [USER_ID])

        const posted = yield* postUpdate(service.baseUrl, sampleUpdate({ updateId: UPDATE_ID, chatId: USER_ID, text: "/start" }))
        assert.strictEqual(posted.status, 200, posted.body)
        yield* eventually(
          "the update in processing",
          probe.query<{ status: string }>("SELECT status FROM inbox WHERE update_id = $1", [UPDATE_ID]),
          (rows) => rows[0]?.status === "processing",
          { timeout: "30 seconds" }
        )
        // Waiting on the lock means the handler runs inside its tracked worker fiber.
        yield* eventually(
          "the /start INSERT waiting on the test's row lock",
          probe.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO users%'`
          ),
          (rows) => (rows[0]?.n ?? 0) >= 1,
          { timeout: "30 seconds" }
        )

        yield* service.kill("SIGUSR2")
        yield* service.waitForOutput(/fiber dump: [1-9]\d* tracked fiber\(s\)/)
        yield* service.waitForOutput(new RegExp(`update ${UPDATE_ID} \\(message\\)`))
        const dump = (yield* service.output).slice((yield* service.output).indexOf("fiber dump:"))
        // The stuck handler's entry names what it is inside, innermost first: its own span.
        assert.match(
          dump,
          new RegExp(`handler of update ${UPDATE_ID} \\(message\\), running for \\d+ ms\\n\\s*spans: Handler\\.start( <|$)`, "m"),
          dump
        )
        assert.strictEqual(service.child.exitCode, null, "the process is still running")
        assert.strictEqual(service.child.signalCode, null, "the process is still running")
        const live = yield* Effect.promise(() => fetch(`${service.baseUrl}/health/live`).then((response) => response.status))
        assert.strictEqual(live, 200)
        const stillProcessing = yield* probe.query<{ status: string }>("SELECT status FROM inbox WHERE update_id = $1", [UPDATE_ID])
        assert.strictEqual(stillProcessing[0]?.status, "processing", "the dump did not end the update")

        yield* blocker.rollback
        yield* standIn.awaitCalls(
          (calls) => calls.some((call) => call.method === "sendMessage" && String(call.params["chat_id"]) === String(USER_ID)),
          "30 seconds"
        )
        yield* eventually(
          "the update done",
          probe.query<{ status: string; attempts: number }>("SELECT status, attempts FROM inbox WHERE update_id = $1", [UPDATE_ID]),
          (rows) => rows[0]?.status === "done",
          { timeout: "30 seconds" }
        ).pipe(Effect.map((rows) => assert.strictEqual(rows[0]?.attempts, 1, "processed by the attempt that was dumped")))
        const users = yield* probe.query<{ n: number }>("SELECT count(*)::int AS n FROM users WHERE telegram_id = $1", [USER_ID])
        assert.strictEqual(users[0]?.n, 1)
        assert.strictEqual(service.child.exitCode, null)
      }),
    90_000
  )
})

describe("errors that escape every Effect boundary", () => {
  for (
    const [kind, logged] of [["exception", "uncaught exception; exiting"], ["rejection", "unhandled promise rejection; exiting"]] as const
  ) {
    it.live(`an unhandled ${kind} is logged as "${logged}" and the process exits with code 1`, () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase(`fatal_${kind}`))
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url, {
          NODE_OPTIONS: `--import=${fatalTrigger}`,
          STEADFAST_TEST_FATAL: kind
        }))
        yield* service.kill("SIGWINCH")
        const exit = yield* service.exited
        const output = yield* service.output
        assert.strictEqual(exit.code, 1, output)
        assert.strictEqual(exit.signal, null, output)
        assert.include(output, logged)
        assert.include(output, "fatal-trigger: escaped every boundary")
      }), 60_000)
  }

  it.live(
    "a fatal error returns the lease of the update in flight before it exits with code 1, within the bound",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("fatal_leases"))
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url, {
          NODE_OPTIONS: `--import=${fatalTrigger}`,
          UPDATE_TIMEOUT_MS: "120000"
        }))
        const probe = yield* pgProbe(databaseUrl)
        // As above: an uncommitted users row keeps `/start` running, its update leased.
        const blocker = yield* holdTransaction(databaseUrl)
        yield* blocker.query("INSERT INTO users (telegram_id) VALUES ($1)", [USER_ID + 1])
        const posted = yield* postUpdate(service.baseUrl, sampleUpdate({ updateId: UPDATE_ID + 1, chatId: USER_ID + 1, text: "/start" }))
        assert.strictEqual(posted.status, 200)
        const leaseOf = probe.query<{ status: string; leased: boolean }>(
          "SELECT status, (lease_id IS NOT NULL OR coalesce(locked_until > now(), false)) AS leased FROM inbox WHERE update_id = $1",
          [UPDATE_ID + 1]
        )
        yield* eventually("the update to be leased", leaseOf, (rows) => rows[0]?.leased === true, { timeout: "20 seconds" })

        const startedAt = Date.now()
        yield* service.kill("SIGWINCH")
        const exit = yield* service.exited
        const output = yield* service.output
        assert.strictEqual(exit.code, 1, output)
        assert.include(output, "uncaught exception; exiting")
        assert.isBelow(Date.now() - startedAt, Duration.toMillis(FATAL_SHUTDOWN_BOUND) + 2_000, output)
        const [row] = yield* leaseOf
        assert.deepStrictEqual(row, { status: "pending", leased: false }, "the lease is returned: a restart takes the update at once")
      }),
    60_000
  )
})
