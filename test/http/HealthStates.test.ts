import { assert, describe, it } from "@effect/vitest"
import { Clock, ConfigProvider, Context, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { baseUrl, TEST_SECRET, TEST_TOKEN, testAppLayer, testEnv } from "../support/TestApp.ts"
import { tcpProxy } from "../support/TcpProxy.ts"
import { freshDatabase, holdTransaction, pgProbe } from "../support/TestDatabase.ts"
import { postUpdate } from "../support/TestHttp.ts"

const Status = Schema.Literals(["pass", "warn", "fail"])
const Check = Schema.Struct({
  status: Status,
  observedValue: Schema.optional(Schema.Unknown),
  output: Schema.optional(Schema.String)
})
const HealthBody = Schema.Struct({
  status: Status,
  checks: Schema.optional(Schema.Record(Schema.String, Schema.Array(Check)))
})
const WebhookObserved = Schema.Struct({
  pendingUpdateCount: Schema.Number,
  lastErrorDate: Schema.NullOr(Schema.Number),
  lastErrorMessage: Schema.NullOr(Schema.String)
})

type Health = {
  readonly status: number
  readonly text: string
  readonly elapsedMs: number
  readonly body: typeof HealthBody.Type
}

const get = (base: string, path: string): Effect.Effect<Health> =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const response = yield* Effect.promise(() => fetch(`${base}${path}`))
    const text = yield* Effect.promise(() => response.text())
    const elapsedMs = (yield* Clock.currentTimeMillis) - started
    const body = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(HealthBody))(text).pipe(Effect.orDie)
    return { status: response.status, text, elapsedMs, body }
  })

/**
 * Polls /health until `until` holds. The very first answer after start waits for the database at
 * most 80 ms, so on a loaded machine it can be `fail` although nothing is wrong: conditions, not single answers.
 */
const healthUntil = (base: string, what: string, until: (health: Health) => boolean, timeout: Duration.Input = "20 seconds") => {
  let last: Health | undefined
  return get(base, "/health").pipe(
    Effect.tap((health) =>
      Effect.sync(() => {
        last = health
      })
    ),
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until }),
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.die(new Error(`timed out waiting for /health ${what}; last answer: ${last?.status} ${last?.text}`))
    })
  )
}

const assertLive = (base: string, phase: string) =>
  Effect.gen(function*() {
    const live = yield* get(base, "/health/live")
    assert.strictEqual(live.status, 200, `liveness ${phase}`)
    assert.strictEqual(live.body.status, "pass", `liveness ${phase}`)
  })

const check = (health: Health, name: string) => health.body.checks?.[name]?.[0]

const assertNoSecrets = (text: string) => {
  for (const secret of [TEST_TOKEN, TEST_TOKEN.split(":")[1]!, TEST_SECRET]) assert.notInclude(text, secret)
}

/** The app against a stand-in the test built (and may have configured) before the app starts. */
const appAgainst = (env: Record<string, unknown>) =>
  makeAppLayer().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

describe("/health states", () => {
  it.live(
    "/health goes pass, warn on a dead-lettered update, 503 fail within 1 s with PostgreSQL stopped (saying the connection was refused), and recovers without a restart; liveness stays 200",
    () =>
      Effect.gen(function*() {
        const cluster = yield* Effect.acquireRelease(Effect.promise(() => startCluster()), (cluster) =>
          Effect.promise(() => cluster.dispose()))
        const databaseUrl = yield* Effect.promise(() =>
          createDatabase(cluster.url("postgres"), "health_states")
        )
        const pg = yield* pgProbe(databaseUrl)
        // Built once: "without a restart" is this layer never being rebuilt.
        const app = yield* Layer.build(testAppLayer({ databaseUrl, env: { SHUTDOWN_GRACE_MS: "500" } }))
        const base = yield* Effect.provideContext(baseUrl, app)

        const passing = yield* healthUntil(base, "pass", (h) => h.body.status === "pass")
        assert.strictEqual(passing.status, 200)
        yield* assertLive(base, "while passing")

        yield* pg.query(`INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, last_error, finished_at)
                                     VALUES (9101, 'chat:9101', 'message', '{"update_id":9101}', 'dead', 5, 'boom', now())`)
        const warning = yield* healthUntil(base, "warn", (h) => h.body.status === "warn")
        assert.strictEqual(warning.status, 200)
        assert.strictEqual(check(warning, "inbox:dead")?.status, "warn", warning.text)
        assert.deepStrictEqual(check(warning, "inbox:dead")?.observedValue, 1)
        yield* assertLive(base, "while warning")

        yield* Effect.promise(() => cluster.stop())
        // With the server gone every answer is fail once the shared answer of the last second
        // has expired, and every answer comes fast.
        const failing = yield* healthUntil(base, "to fail", (h) => {
          assert.isBelow(h.elapsedMs, 1_000)
          return h.body.status === "fail"
        }, "5 seconds")
        assert.strictEqual(failing.status, 503, failing.text)
        assert.strictEqual(failing.body.status, "fail", failing.text)
        assert.strictEqual(check(failing, "postgres:responseTime")?.status, "fail", failing.text)
        assert.isBelow(failing.elapsedMs, 1_000)
        // The check names what it saw: once the pooled connections are gone, a refused connect.
        const refused = yield* healthUntil(
          base,
          "to say the connection was refused",
          (h) => (check(h, "postgres:responseTime")?.output ?? "").includes("connection refused"),
          "10 seconds"
        )
        assert.strictEqual(refused.status, 503, refused.text)
        yield* assertLive(base, "with PostgreSQL stopped")
        const stillFailing = yield* get(base, "/health")
        assert.strictEqual(stillFailing.status, 503, stillFailing.text)
        assert.isBelow(stillFailing.elapsedMs, 1_000)

        yield* Effect.promise(() => cluster.start())
        // The dead row is still there, so the recovered app reads the inbox again and warns.
        const recovered = yield* healthUntil(base, "to recover", (h) => h.body.status !== "fail", "30 seconds")
        assert.strictEqual(recovered.status, 200)
        assert.strictEqual(recovered.body.status, "warn", recovered.text)
        assert.strictEqual(check(recovered, "postgres:responseTime")?.status, "pass", recovered.text)
        assert.deepStrictEqual(check(recovered, "inbox:dead")?.observedValue, 1, recovered.text)
        yield* assertLive(base, "after PostgreSQL is back")
      }),
    120_000
  )

  it.live(
    "/health answers 503 fail within 1 s while PostgreSQL accepts connections but answers nothing (saying it timed out), and recovers when it answers again; liveness stays 200",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("health_hung"))
        const direct = new URL(databaseUrl)
        const proxy = yield* tcpProxy(Number(direct.port))
        const viaProxy = new URL(databaseUrl)
        viaProxy.port = String(proxy.port)
        const app = yield* Layer.build(testAppLayer({ databaseUrl: viaProxy.toString(), env: { SHUTDOWN_GRACE_MS: "500" } }))
        const base = yield* Effect.provideContext(baseUrl, app)
        yield* healthUntil(base, "not fail", (h) => h.body.status !== "fail")

        yield* proxy.pause
        yield* Effect.addFinalizer(() => proxy.resume)
        // Every answer comes in time, whether it reuses the last probe or probes afresh; a fresh
        // probe fails. Several answers: a check may find a pooled connection (its query hangs) or
        // have to open one (its connect hangs), and both must be given up at the timeout.
        const answers: Array<Health> = []
        while (answers.filter((answer) => answer.status === 503).length < 3) {
          const hung = yield* get(base, "/health").pipe(Effect.timeoutOrElse({
            duration: "20 seconds",
            orElse: () => Effect.die(new Error(`/health gave no answer within 20 s (answer ${answers.length + 1} with PostgreSQL hung)`))
          }))
          answers.push(hung)
          assert.isBelow(hung.elapsedMs, 1_000, `answer ${answers.length} with PostgreSQL hung came late: ${hung.text}`)
          assert.isBelow(answers.length, 100, "/health never reported the hung database")
          if (hung.status === 503) {
            assert.strictEqual(check(hung, "postgres:responseTime")?.status, "fail", hung.text)
            assert.include(check(hung, "postgres:responseTime")?.output ?? "", "timed out", hung.text)
          } else yield* Effect.sleep("100 millis")
        }
        yield* assertLive(base, "with PostgreSQL hung")

        yield* proxy.resume
        const recovered = yield* healthUntil(base, "to recover", (h) => h.body.status !== "fail", "30 seconds")
        assert.strictEqual(check(recovered, "postgres:responseTime")?.status, "pass", recovered.text)
      }),
    60_000
  )

  it.live(
    "in webhook mode, a recent delivery error reported by getWebhookInfo turns telegram:webhook to warn, a new one shows within seconds, without secrets",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const message = "Wrong response from the webhook: 502 Bad Gateway"
        const nowSeconds = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        // Set before the app exists: the first refresh runs at start.
        yield* standIn.setWebhookInfo({ last_error_date: nowSeconds, last_error_message: message, pending_update_count: 3 })
        const databaseUrl = yield* Effect.promise(() => freshDatabase("health_webhook"))
        const app = yield* Layer.build(appAgainst(testEnv(databaseUrl, standIn.url, { PUBLIC_URL: "https://bot.example.test" })))
        const base = yield* Effect.provideContext(baseUrl, app)

        const health = yield* healthUntil(
          base,
          "with a refreshed telegram:webhook check",
          (h) => h.body.status !== "fail" && check(h, "telegram:webhook")?.observedValue !== undefined
        )
        const webhook = check(health, "telegram:webhook")
        assert.strictEqual(webhook?.status, "warn", health.text)
        const observed = yield* Schema.decodeUnknownEffect(WebhookObserved)(webhook?.observedValue).pipe(Effect.orDie)
        assert.strictEqual(observed.pendingUpdateCount, 3)
        assert.strictEqual(observed.lastErrorMessage, message)
        assert.strictEqual(observed.lastErrorDate, nowSeconds)
        assert.include(webhook?.output ?? "", message)
        assert.strictEqual(health.status, 200)
        assert.strictEqual(health.body.status, "warn", health.text)
        assertNoSecrets(health.text)
        assert.isAtLeast((yield* standIn.calls).filter((call) => call.method === "getWebhookInfo").length, 1)

        // A new delivery error shows within seconds, not after a minute.
        const later = "Connection timed out while delivering"
        yield* standIn.setWebhookInfo({ last_error_date: nowSeconds + 1, last_error_message: later, pending_update_count: 4 })
        const refreshed = yield* healthUntil(
          base,
          "with the new delivery error",
          (h) => (check(h, "telegram:webhook")?.output ?? "").includes(later),
          "15 seconds"
        )
        assert.strictEqual(check(refreshed, "telegram:webhook")?.status, "warn", refreshed.text)
      }),
    60_000
  )

  it.live(
    "a backlog count that cannot finish makes /health warn, naming the timeout, never fail: the instance still takes updates",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("health_backlog_stuck"))
        const app = yield* Layer.build(testAppLayer({ databaseUrl, env: { SHUTDOWN_GRACE_MS: "500" } }))
        const base = yield* Effect.provideContext(baseUrl, app)
        yield* healthUntil(base, "pass", (h) => h.body.status === "pass")
        // The backlog query reads the outbox; an exclusive lock on it stalls the count, not the webhook.
        const held = yield* holdTransaction(databaseUrl)
        yield* held.query("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        const stuck = yield* healthUntil(base, "to warn about the backlog count", (h) => {
          assert.notStrictEqual(h.body.status, "fail", h.text)
          return (check(h, "inbox:backlog")?.output ?? "").includes("timed out")
        })
        assert.strictEqual(stuck.status, 200, stuck.text)
        assert.strictEqual(check(stuck, "inbox:backlog")?.status, "warn", stuck.text)
        assert.strictEqual(check(stuck, "postgres:responseTime")?.status, "pass", stuck.text)
        const posted = yield* postUpdate(base, sampleUpdate({ updateId: 9201, chatId: 9201, text: "still taken" }))
        assert.strictEqual(posted.status, 200, posted.body)
        yield* held.rollback
      }).pipe(Effect.scoped),
    60_000
  )

  it.live("in sandbox mode /health has no telegram:webhook check", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("health_sandbox"))
      const app = yield* Layer.build(appAgainst({ BOT_MODE: "sandbox", DATABASE_URL: databaseUrl, HOST: "127.0.0.1", PORT: "0" }))
      const base = yield* Effect.provideContext(baseUrl, app)
      const health = yield* healthUntil(base, "not fail", (h) => h.body.status !== "fail")
      const names = Object.keys(health.body.checks ?? {})
      assert.include(names, "inbox:dead", health.text)
      assert.include(names, "postgres:responseTime", health.text)
      assert.notInclude(names, "telegram:webhook", health.text)
    }), 60_000)
})
