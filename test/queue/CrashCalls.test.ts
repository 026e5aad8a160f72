// Calls made at once under kill -9: what a re-run may repeat, and an update that takes its process
// down every time it runs.
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { awaitStatus, freshDatabase, pgProbe, holdTransaction } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const service = (databaseUrl: string, apiRoot: string, env: Record<string, string> = {}) =>
  spawnService(testEnv(databaseUrl, apiRoot, { SEND_RATE_PER_SECOND: "10000", ...env }), {
    command: [process.execPath, "test/support/TwoCallsService.ts"]
  })

const texts = (calls: ReadonlyArray<{ readonly method: string; readonly params: Record<string, unknown> }>) =>
  calls.filter((call) => call.method === "sendMessage").map((call) => String(call.params["text"]))

describe("calls made at once under kill -9", () => {
  it.live(
    "kill -9 during a handler that made two calls: after the restart each call reached Telegram at most twice and the update is done",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("crash_calls"))
        const first = yield* service(databaseUrl, standIn.url)
        const probe = yield* pgProbe(databaseUrl)
        const chatId = 650_001
        // The handler's write waits behind this uncommitted row: it is past both calls when killed.
        const blocker = yield* holdTransaction(databaseUrl)
        yield* blocker.query(`INSERT INTO users (telegram_id) VALUES ($1)`, [chatId])

        assert.strictEqual((yield* postUpdate(first.baseUrl, sampleUpdate({ updateId: 65_001, chatId, text: "two" }))).status, 200)
        yield* standIn.awaitCalls((calls) => texts(calls).includes("second 65001"), "20 seconds")
        yield* first.kill("SIGKILL")
        yield* first.exited
        yield* blocker.rollback

        yield* service(databaseUrl, standIn.url)
        const done = yield* awaitStatus(probe, 65_001, "done", "30 seconds")
        assert.isAtLeast(done.attempts, 2, "the update ran again after its lease expired")
        const sent = texts(yield* standIn.calls)
        for (const text of ["first 65001", "second 65001"]) {
          const times = sent.filter((seen) => seen === text).length
          assert.isAtLeast(times, 1, text)
          assert.isAtMost(times, 2, `${text} reached Telegram at most twice`)
        }
        yield* eventually(
          "the write committed once",
          probe.query<{ n: number }>(`SELECT count(*)::int AS n FROM users WHERE telegram_id = $1`, [chatId]),
          (rows) => rows[0]?.n === 1,
          { timeout: "5 seconds" }
        )
      }),
    90_000
  )

  it.live(
    "an update that takes its process down every time is dead-lettered at its claim after MAX_ATTEMPTS runs, and its chat goes on",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("crash_loop"))
        const probe = yield* pgProbe(databaseUrl)
        const env = { MAX_ATTEMPTS: "2" }
        const chatId = 650_002
        const crashes = (updateId: number) => standIn.awaitCalls((calls) => texts(calls).includes(`crashing on ${updateId}`), "20 seconds")

        const first = yield* service(databaseUrl, standIn.url, env)
        // The process may die before it answers: the update was stored (the store commits first).
        yield* postUpdate(first.baseUrl, sampleUpdate({ updateId: 65_101, chatId, text: "/crash" })).pipe(Effect.ignoreCause)
        yield* first.exited
        // The dead process's lease would expire on its own within 10 s; expire it now instead.
        const expire = probe.query(`UPDATE inbox SET locked_until = now() WHERE update_id = 65101 AND status = 'processing'`)
        yield* expire
        const second = yield* service(databaseUrl, standIn.url, env)
        yield* crashes(65_101)
        yield* second.exited
        yield* expire
        const third = yield* service(databaseUrl, standIn.url, env)
        assert.strictEqual((yield* postUpdate(third.baseUrl, sampleUpdate({ updateId: 65_102, chatId, text: "after" }))).status, 200)
        const dead = yield* awaitStatus(probe, 65_101, "dead", "30 seconds")
        assert.strictEqual(dead.attempts, 2)
        assert.include(dead.last_error ?? "", "without an outcome")
        yield* awaitStatus(probe, 65_102, "done", "30 seconds")
        // Each run's call was made at most once per run: no run of it recorded anything.
        assert.isAtMost(texts(yield* standIn.calls).filter((text) => text === "crashing on 65101").length, 2)
      }),
    90_000
  )
})
