import { assert, describe, inject, it, layer } from "@effect/vitest"
import { Clock, Effect, Layer, Schedule, Schema } from "effect"
import { createDatabase, startCluster } from "../support/EmbeddedCluster.ts"
import { baseUrl, TEST_SECRET, TEST_TOKEN, testAppLayer } from "../support/TestApp.ts"
import { AppDatabase, pgProbe } from "../support/TestDatabase.ts"

// Distinctive credentials, so that finding them in an answer cannot be a coincidence.
const DB_USER = "health_owner"
const DB_PASSWORD = "pw-Hq8vDistinctive"

/**
 * A fresh database owned by a role with DB_PASSWORD, on the server behind `adminUrl`; returns
 * the URL the app connects with.
 */
const databaseWithOwnPassword = (adminUrl: string, name: string) =>
  Effect.gen(function*() {
    const url = yield* Effect.promise(() => createDatabase(adminUrl, name))
    const pg = yield* pgProbe(url)
    yield* pg.query(`DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER}') THEN
        CREATE ROLE ${DB_USER} LOGIN PASSWORD '${DB_PASSWORD}';
      END IF; END $$`)
    yield* pg.query(`ALTER DATABASE "${name}" OWNER TO ${DB_USER}`)
    const appUrl = new URL(url)
    appUrl.username = DB_USER
    appUrl.password = DB_PASSWORD
    return appUrl.toString()
  })

const Check = Schema.Struct({
  status: Schema.Literals(["pass", "warn", "fail"]),
  observedValue: Schema.optional(Schema.Unknown),
  output: Schema.optional(Schema.String)
})
const HealthBody = Schema.Struct({
  status: Schema.Literals(["pass", "warn", "fail"]),
  checks: Schema.optional(Schema.Record(Schema.String, Schema.Array(Check)))
})

const get = (path: string) =>
  Effect.gen(function*() {
    const base = yield* baseUrl
    const started = yield* Clock.currentTimeMillis
    const response = yield* Effect.promise(() => fetch(`${base}${path}`))
    const text = yield* Effect.promise(() => response.text())
    const elapsedMs = (yield* Clock.currentTimeMillis) - started
    const body = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(HealthBody))(text).pipe(Effect.orDie)
    return { status: response.status, contentType: response.headers.get("content-type"), text, body, elapsedMs }
  })

/**
 * /health once it is not `fail`. The very first answer after start waits for the database at most
 * 80 ms, so on a loaded machine it can be `fail` although nothing is wrong; `pass` and `warn` are what is tested.
 */
const healthUntil = (until: (health: Effect.Success<ReturnType<typeof get>>) => boolean) =>
  get("/health").pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until }),
    Effect.timeout("15 seconds")
  )
const settledHealth = healthUntil((health) => health.body.status !== "fail")

const assertNoSecrets = (text: string) => {
  for (const secret of [TEST_TOKEN, TEST_TOKEN.split(":")[1]!, TEST_SECRET, DB_PASSWORD]) assert.notInclude(text, secret)
}

const REQUIRED_CHECKS = ["postgres:responseTime", "postgres:connections", "inbox:backlog", "inbox:dead", "process:uptime"]

const appLayer = Layer.unwrap(Effect.map(
  databaseWithOwnPassword(inject("databaseUrl"), `t_health_${process.pid}`),
  (url) => Layer.merge(testAppLayer({ databaseUrl: url }), AppDatabase.layer(url))
))

// `layer` builds the app once for the file; excludeTestServices keeps its tests on the live clock.
layer(appLayer, { excludeTestServices: true })("GET /health", (it) => {
  it.effect("/health answers application/health+json, status pass, with the postgres, inbox and process checks", () =>
    Effect.gen(function*() {
      const health = yield* settledHealth
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.contentType, "application/health+json")
      assert.strictEqual(health.body.status, "pass", health.text)
      const checks = health.body.checks ?? {}
      for (const name of REQUIRED_CHECKS) {
        assert.strictEqual(checks[name]?.[0]?.status, "pass", `${name} in ${health.text}`)
      }
      assert.deepStrictEqual(checks["inbox:dead"]?.[0]?.observedValue, 0)
      assertNoSecrets(health.text)
    }))

  it.effect("a dead-lettered update turns /health to warn, still with HTTP 200", () =>
    Effect.gen(function*() {
      const pg = yield* AppDatabase
      yield* Effect.acquireRelease(
        pg.query(`INSERT INTO inbox (update_id, chat_key, kind, payload, status, attempts, last_error, finished_at)
                      VALUES (9001, 'chat:9001', 'message', '{"update_id":9001}', 'dead', 5, 'boom', now())`),
        () => pg.query("DELETE FROM inbox WHERE update_id = 9001")
      )
      // Answers are shared for a second, so the dead letter shows up on a later one.
      const health = yield* healthUntil((health) => health.body.status === "warn")
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.status, "warn", health.text)
      assert.strictEqual(health.body.checks?.["inbox:dead"]?.[0]?.status, "warn")
      assert.deepStrictEqual(health.body.checks?.["inbox:dead"]?.[0]?.observedValue, 1)
      assertNoSecrets(health.text)
    }))

  it.effect("/health/live answers 200 pass", () =>
    Effect.gen(function*() {
      const live = yield* get("/health/live")
      assert.strictEqual(live.status, 200)
      assert.strictEqual(live.contentType, "application/health+json")
      assert.strictEqual(live.body.status, "pass")
    }))
})

describe("GET /health without its database", () => {
  it.live("with PostgreSQL stopped /health answers 503 fail within 1 s while /health/live stays 200", () =>
    Effect.gen(function*() {
      const cluster = yield* Effect.acquireRelease(
        Effect.promise(() => startCluster()),
        (cluster) => Effect.promise(() => cluster.dispose())
      )
      const databaseUrl = yield* databaseWithOwnPassword(cluster.url("postgres"), "health_outage")
      yield* Effect.gen(function*() {
        assert.strictEqual((yield* settledHealth).body.status, "pass")
        yield* Effect.promise(() => cluster.stop())

        // An answer may be shared from the last second; the next probe finds the server gone.
        const health = yield* get("/health").pipe(
          Effect.tap((health) => Effect.sync(() => assert.isBelow(health.elapsedMs, 1_000))),
          Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (health) => health.status === 503 }),
          Effect.timeout("5 seconds")
        )
        assert.strictEqual(health.status, 503)
        assert.strictEqual(health.contentType, "application/health+json")
        assert.strictEqual(health.body.status, "fail", health.text)
        assert.strictEqual(health.body.checks?.["postgres:responseTime"]?.[0]?.status, "fail")
        assert.isBelow(health.elapsedMs, 1_000)
        assertNoSecrets(health.text)

        const live = yield* get("/health/live")
        assert.strictEqual(live.status, 200)
        assert.strictEqual(live.body.status, "pass")
      }).pipe(Effect.provide(testAppLayer({ databaseUrl, env: { SHUTDOWN_GRACE_MS: "1000" } })))
    }))
})
