// Readiness means "can take updates": neither an ingress burst nor a large backlog makes /health
// fail, so instances do not all leave the load balancer at once when they are busiest.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"
import { postStatus } from "../support/TestHttp.ts"

const BURST = 2_000
const BACKLOG = 50_000

interface Answer {
  readonly status: number
  readonly elapsedMs: number
  readonly body: string
}

const pollerScript = fileURLToPath(new URL("../support/HealthPoller.ts", import.meta.url))

describe("readiness under load", () => {
  it.live(
    `during a burst of ${BURST} updates with a ${BACKLOG}-row backlog, /health polled every 100 ms answers 200 every time, within 100 ms (all but a stalled few)`,
    () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const databaseUrl = yield* Effect.promise(() => freshDatabase("health_under_load"))
        const pg = yield* pgProbe(databaseUrl)
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url))
        // The backlog: open rows written directly, not yet due, so they weigh on every count
        // without being worked off while the test looks.
        yield* pg.query(`INSERT INTO inbox (update_id, chat_key, kind, payload, available_at, received_at)
           SELECT id, 'chat:' || (id % 5000), 'message', jsonb_build_object('update_id', id),
                  now() + interval '1 hour', now() - interval '10 minutes'
           FROM generate_series(1, ${BACKLOG}) AS id`)
        yield* pg.query("ANALYZE inbox")

        // Polled from a process of its own, so the test's work (posting the burst) never delays a measurement.
        const poller = yield* Effect.acquireRelease(
          Effect.sync(() => spawn(process.execPath, [pollerScript, `${service.baseUrl}/health`], { stdio: ["pipe", "pipe", "inherit"] })),
          (child) => Effect.sync(() => void child.kill("SIGKILL"))
        )
        const lines: Array<string> = []
        poller.stdout.setEncoding("utf8")
        let partial = ""
        poller.stdout.on("data", (chunk: string) => {
          const parts = (partial + chunk).split("\n")
          partial = parts.pop() ?? ""
          lines.push(...parts)
        })
        const exited = Effect.callback<void>((resume) => void poller.once("exit", () => resume(Effect.void)))
        yield* eventually("the poller's first answer", Effect.sync(() => lines.length), (n) => n > 0, { timeout: "20 seconds" })

        const statuses = yield* Effect.forEach(
          Array.from({ length: BURST }, (_, i) => 200_000 + i),
          (updateId) =>
            postStatus(
              service.baseUrl,
              JSON.stringify(sampleUpdate({ updateId, chatId: 60_000 + (updateId % 400), text: `burst ${updateId}` }))
            ),
          { concurrency: 32 }
        )
        poller.stdin.end()
        yield* exited
        const seen = lines.filter((line) => line !== "").map((line) => JSON.parse(line) as Answer)
        assert.strictEqual(statuses.filter((status) => status === 200).length, BURST, "every update of the burst was stored")
        assert.isAtLeast(seen.length, 10, "polled throughout the burst")
        const times = seen.map((answer) => Math.round(answer.elapsedMs))
        for (const answer of seen) assert.strictEqual(answer.status, 200, answer.body)
        // Within 100 ms: nothing in /health waits for the database. On a shared 2-core machine the
        // process can still stall now and then (GC, the burst's own work, other processes), which
        // /health/live shows just the same, so a few answers may be late, none by much.
        const late = times.filter((ms) => ms >= 100)
        assert.isAtMost(late.length, Math.floor(seen.length * 0.05), `answers (ms): ${times.join(", ")}`)
        assert.isTrue(times.every((ms) => ms < 1_000), `answers (ms): ${times.join(", ")}`)
        // The backlog shows, as a warning.
        assert.include(seen[seen.length - 1]!.body, `"inbox:backlog"`)
      }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer())),
    120_000
  )
})
