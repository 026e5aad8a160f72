// An unreachable Bot API behind a URL with credentials: the error texts that leave the process
// (logs, /health, last_error) name the scheme and host, nothing of the userinfo, token or path.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { freePort } from "../support/EmbeddedCluster.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_TOKEN, testEnv } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"
import { postStatus } from "../support/TestHttp.ts"

const USER = "proxyUserQ7x"
const PASS = "proxyPassZ9w"

describe("errors without URLs", () => {
  it.live(
    "with TELEGRAM_API_ROOT=http://user:pass@127.0.0.1:<closed port>, nothing of the user, password, token or path shows in /health, logs or last_error",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("errors_without_urls"))
        const pg = yield* pgProbe(databaseUrl)
        const closedPort = yield* Effect.promise(() => freePort())
        const service = yield* spawnService(
          testEnv(databaseUrl, `http://${USER}:${PASS}@127.0.0.1:${closedPort}`, { LOG_LEVEL: "debug", MAX_ATTEMPTS: "1" })
        )
        const update = sampleUpdate({ updateId: 770_001, chatId: 770_001, text: "/start" })
        assert.strictEqual(yield* postStatus(service.baseUrl, JSON.stringify(update)), 200)

        // The reply fails against the closed port; its error is kept as last_error.
        const errors = yield* eventually(
          "a last_error from the failed Bot API call",
          pg.rows(
            Schema.Struct({ last_error: Schema.String }),
            `SELECT last_error FROM inbox WHERE last_error IS NOT NULL
             UNION ALL SELECT last_error FROM outbox WHERE last_error IS NOT NULL`
          ),
          (rows) => rows.length > 0,
          { timeout: "40 seconds", interval: "200 millis" }
        )
        // getWebhookInfo fails too: /health reports it.
        const health = yield* eventually(
          "/health to report the failed getWebhookInfo",
          Effect.promise(() => fetch(`${service.baseUrl}/health`).then((r) => r.text())),
          (text) => text.includes("getWebhookInfo failed"),
          { timeout: "40 seconds", interval: "200 millis" }
        )
        assert.include(health, `http://127.0.0.1:${closedPort}`, "the host stays, so the fault can still be found")
        const logs = yield* service.output
        assert.include(logs, `http://127.0.0.1:${closedPort}`)

        const texts = { health, logs, lastError: errors.map((row) => row.last_error).join("\n") }
        for (const [where, text] of Object.entries(texts)) {
          for (const secret of [USER, PASS, TEST_TOKEN, TEST_TOKEN.split(":")[1]!, "/bot<redacted>", "/getWebhookInfo", "/sendMessage"]) {
            assert.notInclude(text, secret, `${where} shows ${secret}`)
          }
        }
      }).pipe(Effect.scoped),
    90_000
  )
})
