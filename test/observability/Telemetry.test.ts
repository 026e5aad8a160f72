// What the running service exports over OTLP/HTTP: the real process (`node src/main.ts`)
// exports to a receiver in this test process, answers through the Bot API stand-in and
// stores in its own database.
import { assert, describe, it, layer } from "@effect/vitest"
import { Clock, Context, Effect, Fiber, Layer, Schedule, Schema } from "effect"
import { fileURLToPath } from "node:url"
import packageJson from "../../package.json" with { type: "json" }
import { APPLICATION_NAME } from "../../src/Config.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import {
  descendantsOf,
  type FlatSpan,
  makeOtlpReceiver,
  type OtlpReceiver,
  pointsOf,
  type Received,
  renderTree,
  SpanKind,
  spansNamed
} from "../support/OtlpReceiver.ts"
import { type ServiceProcess, spawnService } from "../support/ServiceProcess.ts"
import { TEST_SECRET, TEST_TOKEN, testEnv } from "../support/TestApp.ts"
import { eventually } from "../support/Eventually.ts"
import { freshDatabase, type PgProbe, pgProbe } from "../support/TestDatabase.ts"
import { postStatus } from "../support/TestHttp.ts"

const DB_PASSWORD = "otelDbPassword_q7Wz3xK"
const POOL_MAX = 10

/** Fast exports, so the tests wait for data rather than for timers. */
const fastExport = {
  OTEL_SERVICE_NAME: "steadfast-test",
  OTEL_METRIC_EXPORT_INTERVAL: "500",
  OTEL_BSP_SCHEDULE_DELAY: "200",
  OTEL_BLRP_SCHEDULE_DELAY: "200"
}

// --- the service's database, read with the test kit's probe (never through the service's pool) ---

/**
 * A fresh database owned by a role of its own, so that the service's DATABASE_URL (`url`) carries
 * a password distinctive enough to search the exported data for; `pg` reads it as the admin.
 */
const databaseWithOwnRole = (label: string) =>
  Effect.gen(function*() {
    const adminUrl = yield* Effect.promise(() => freshDatabase(label))
    const database = new URL(adminUrl).pathname.slice(1)
    const role = `${database}_owner`
    const pg = yield* pgProbe(adminUrl)
    yield* pg.query(`CREATE ROLE "${role}" LOGIN PASSWORD '${DB_PASSWORD}'`)
    yield* pg.query(`ALTER DATABASE "${database}" OWNER TO "${role}"`)
    const url = new URL(adminUrl)
    url.username = role
    url.password = DB_PASSWORD
    return { pg, url: url.toString() }
  })

const startUpdate = (updateId: number, chatId: number, firstName = "Ada") =>
  JSON.stringify(sampleUpdate({ updateId, chatId, text: "/start", firstName, username: `${firstName.toLowerCase()}_tg` }))

// --- reading spans ---

const processSpanOf = (spans: ReadonlyArray<FlatSpan>, updateId: number) =>
  spansNamed(spans, "process inbox").find((span) => span.attributes["telegram.update_id"] === updateId)

/** The webhook request that stored the update, found through the process span's link. */
const webhookSpanOf = (spans: ReadonlyArray<FlatSpan>, process: FlatSpan) =>
  spansNamed(spans, "POST /webhook").find((span) =>
    process.links.some((link) => link.traceId === span.traceId && link.spanId === span.spanId)
  )

const sqlSpans = (spans: ReadonlyArray<FlatSpan>) => spans.filter((span) => typeof span.attributes["db.query.text"] === "string")
const queryText = (span: FlatSpan) => String(span.attributes["db.query.text"])

/** The whole trace of `span`, drawn from its root. */
const traceOf = (spans: ReadonlyArray<FlatSpan>, span: FlatSpan) => {
  const root = spans.find((candidate) => candidate.traceId === span.traceId && candidate.parentSpanId === "") ?? span
  return renderTree(spans, root)
}

const nowNanos = Clock.currentTimeNanos

// --- one service with telemetry on, shared by the tests of the first suite ---

class Exporting extends Context.Service<Exporting, {
  readonly receiver: OtlpReceiver
  readonly standIn: BotApiRecorder["Service"]
  readonly service: ServiceProcess
  readonly db: PgProbe
}>()("test/observability/Exporting") {
  static readonly layer = Layer.effect(
    Exporting,
    Effect.gen(function*() {
      const receiver = yield* makeOtlpReceiver()
      const standIn = yield* BotApiRecorder
      const { pg: db, url } = yield* databaseWithOwnRole("otel")
      const service = yield* spawnService(testEnv(url, standIn.url, {
        ...fastExport,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        // The exporters' gzip path: the receiver must decode it like a collector does.
        OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test",
        // A failed attempt is final, so a failing update ends as `dead` without waiting for a retry.
        MAX_ATTEMPTS: "1",
        DB_POOL_MAX: String(POOL_MAX),
        SEND_RATE_PER_SECOND: "100000"
      }))
      return Exporting.of({ receiver, standIn, service, db })
    })
  ).pipe(Layer.provide(BotApiRecorder.layer()))
}

const TraceRow = Schema.Struct({ status: Schema.String, trace_id: Schema.NullOr(Schema.String), traceparent: Schema.NullOr(Schema.String) })
/** The update's inbox row: its status and the traces it leads to. */
const traceRow = (db: PgProbe, updateId: number) =>
  Effect.map(
    db.rows(TraceRow, `SELECT status, trace_id, traceparent FROM inbox WHERE update_id = $1`, [updateId]),
    (rows) => rows[0]
  )

const PoolSessions = Schema.Struct({ open: Schema.Number, listening: Schema.Number })
/** The service's open connections to its database, as PostgreSQL sees them. */
const poolSessions = (db: PgProbe) =>
  Effect.map(
    db.rows(
      PoolSessions,
      `SELECT count(*)::int AS open, (count(*) FILTER (WHERE query LIKE 'LISTEN%'))::int AS listening
       FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
      [APPLICATION_NAME]
    ),
    (rows) => rows[0] ?? { open: 0, listening: 0 }
  )

const used = { "db.client.connection.state": "used", "db.client.connection.pool.name": APPLICATION_NAME }
const usedSince = (received: Received, since: bigint) =>
  pointsOf(received.metrics, "db.client.connection.count", used).filter((point) => BigInt(point.timeUnixNano) > since)

/** The pool's metrics by the database client conventions: name, unit, OTLP type. */
const POOL_METRICS: ReadonlyArray<readonly [string, string, string]> = [
  ["db.client.connection.count", "{connection}", "gauge"],
  ["db.client.connection.max", "{connection}", "gauge"],
  ["db.client.connection.idle.max", "{connection}", "gauge"],
  ["db.client.connection.idle.min", "{connection}", "gauge"],
  ["db.client.connection.pending_requests", "{request}", "gauge"],
  ["db.client.connection.timeouts", "{timeout}", "sum"],
  ["db.client.connection.wait_time", "s", "histogram"],
  ["db.client.connection.use_time", "s", "histogram"],
  ["db.client.connection.create_time", "s", "histogram"]
]

/** HTTP's and the service's own metrics: name, unit, attributes of a point that must exist. */
const SERVICE_METRICS: ReadonlyArray<readonly [string, string, Record<string, string>]> = [
  ["http.server.request.duration", "s", { "http.request.method": "POST", "http.route": "/webhook", "http.response.status_code": "200" }],
  ["steadfast.updates.received", "{update}", { "telegram.update.kind": "message" }],
  ["steadfast.updates.processed", "{update}", { outcome: "done" }],
  ["steadfast.inbox.backlog", "{update}", {}],
  ["steadfast.botapi.call.duration", "s", { "telegram.method": "sendMessage", outcome: "ok" }]
]

/** Waits until every metric in `names` was exported; the metrics received. The names seen, if not. */
const awaitMetrics = (receiver: OtlpReceiver, names: ReadonlyArray<string>) =>
  Effect.map(
    receiver.waitFor((received) => names.every((name) => received.metrics.some((metric) => metric.name === name)) ? received : undefined)
      .pipe(
        Effect.catchTag("ReceiverTimeout", (error) =>
          Effect.flatMap(receiver.snapshot, (received) =>
            Effect.die(
              new Error(`${error.message}; metric names seen: ${[...new Set(received.metrics.map((m) => m.name))].sort().join(", ")}`)
            )))
      ),
    (received) => received.metrics
  )

/** The count of a histogram's latest point. */
const lastCount = (metrics: Received["metrics"], name: string) => Number(pointsOf(metrics, name).at(-1)?.count ?? 0)

/**
 * One round of load: 200 /start updates from 200 new chats from `first` on, posted 50 at a
 * time, until all are answered. Returns the most sessions PostgreSQL showed the service holding.
 */
const loadRound = (
  { db, service, standIn }: Pick<Exporting["Service"], "db" | "service" | "standIn">,
  first: number
) =>
  Effect.gen(function*() {
    let peakOpen = 0
    const sampler = yield* poolSessions(db).pipe(
      Effect.tap((sessions) => Effect.sync(() => void (peakOpen = Math.max(peakOpen, sessions.open)))),
      Effect.repeat(Schedule.spaced("25 millis")),
      Effect.forkChild
    )
    const statuses = yield* Effect.forEach(
      Array.from({ length: 200 }, (_, i) => first + i),
      (updateId) => postStatus(service.baseUrl, startUpdate(updateId, 6_000_000 + updateId)),
      { concurrency: 50 }
    )
    assert.isTrue(statuses.every((code) => code === 200), `statuses: ${[...new Set(statuses)].join(", ")}`)
    yield* standIn.awaitCalls(
      (calls) => calls.filter((call) => call.method === "sendMessage" && Number(call.params["chat_id"]) >= 6_000_000 + first).length >= 200,
      "30 seconds"
    )
    yield* Fiber.interrupt(sampler)
    return peakOpen
  })

layer(Exporting.layer, { excludeTestServices: true, timeout: "60 seconds" })("telemetry exported by the running service", (it) => {
  it.effect("one /start update: the webhook span holds the inbox insert, its processing is a linked consumer trace with handler, SQL and Bot API spans", () =>
    Effect.gen(function*() {
      const { db, receiver, service } = yield* Exporting
      const updateId = 1001
      const status = yield* postStatus(service.baseUrl, startUpdate(updateId, 5550101, "Quentinella"))
      assert.strictEqual(status, 200)

      const { spans, process, webhook, call } = yield* receiver.waitFor(({ spans }) => {
        const process = processSpanOf(spans, updateId)
        if (process === undefined) return undefined
        const webhook = webhookSpanOf(spans, process)
        const call = descendantsOf(spans, process).find((span) => span.name === "BotApi.sendMessage")
        if (webhook === undefined || call === undefined) return undefined
        return { spans, process, webhook, call }
      })
      const tree = traceOf(spans, process)

      // The request: a SERVER span by the HTTP conventions, a root (Telegram sends no traceparent).
      assert.strictEqual(webhook.kind, SpanKind.server)
      assert.strictEqual(webhook.parentSpanId, "")
      assert.strictEqual(webhook.attributes["http.request.method"], "POST")
      assert.strictEqual(webhook.attributes["http.route"], "/webhook")
      assert.strictEqual(webhook.attributes["url.path"], "/webhook")
      assert.strictEqual(webhook.attributes["url.scheme"], "http")
      assert.strictEqual(webhook.attributes["http.response.status_code"], 200)
      assert.strictEqual(webhook.resource["service.name"], "steadfast-test")
      assert.strictEqual(webhook.resource["deployment.environment.name"], "test")
      const insert = sqlSpans(descendantsOf(spans, webhook)).find((span) => queryText(span).includes("steadfast_store("))
      assert.isDefined(insert, traceOf(spans, webhook))
      assert.strictEqual(insert!.kind, SpanKind.client)
      assert.strictEqual(insert!.attributes["db.system.name"], "postgresql")

      // Its processing: a CONSUMER root span of its own trace, linked back to the request.
      assert.strictEqual(process.kind, SpanKind.consumer)
      assert.strictEqual(process.parentSpanId, "")
      assert.notStrictEqual(process.traceId, webhook.traceId)
      assert.strictEqual(process.attributes["messaging.operation.type"], "process")
      assert.strictEqual(process.attributes["telegram.update_id"], updateId)
      assert.strictEqual(process.attributes["telegram.update.kind"], "message")
      assert.strictEqual(process.attributes["steadfast.attempt"], 1)
      assert.strictEqual(process.attributes["steadfast.outcome"], "done")
      assert.strictEqual(process.status.code, 1)
      assert.deepStrictEqual(process.links.map((link) => [link.traceId, link.spanId]), [[webhook.traceId, webhook.spanId]])

      const inProcess = descendantsOf(spans, process)
      assert.strictEqual(process.attributes["steadfast.handler"], "start")
      assert.isDefined(inProcess.find((span) => span.name === "Handler.start"), tree)
      const statements = sqlSpans(inProcess)
      const texts = statements.map(queryText)
      for (const expected of ["INSERT INTO users", "UPDATE inbox"]) {
        assert.isTrue(texts.some((text) => text.includes(expected)), `a statement with "${expected}" in\n${tree}`)
      }
      // Statement text carries placeholders, never the update's values.
      for (const text of texts) {
        for (const value of ["Quentinella", "quentinella_tg", "5550101", "Hello,"]) assert.notInclude(text, value)
      }

      // The Bot API call, made while the handler runs, is a CLIENT span of the processing, without the
      // token; a call made for real is not marked as a recorded result.
      assert.strictEqual(call.kind, SpanKind.client)
      assert.strictEqual(call.attributes["telegram.method"], "sendMessage")
      assert.isUndefined(call.attributes["steadfast.recorded"])

      // The inbox row leads from the update_id to both traces.
      const row = yield* traceRow(db, updateId)
      assert.strictEqual(row?.status, "done")
      assert.strictEqual(row?.trace_id, process.traceId)
      assert.strictEqual(row?.traceparent, `00-${webhook.traceId}-${webhook.spanId}-01`)
    }))

  it.effect("a handler that fails: the process span has error status, the exception event and outcome dead", () =>
    Effect.gen(function*() {
      const { db, receiver, service } = yield* Exporting
      const updateId = 1002
      // A user id beyond bigint: the /start handler's INSERT INTO users fails to encode it.
      const body = `{"update_id":${updateId},"message":{"message_id":1,"date":1767225600,"chat":{"id":5550102,"type":"private"},` +
        `"from":{"id":1e30,"is_bot":false,"first_name":"Huge"},"text":"/start","entities":[{"type":"bot_command","offset":0,"length":6}]}}`
      assert.strictEqual(yield* postStatus(service.baseUrl, body), 200)

      const { spans, process } = yield* receiver.waitFor(({ spans }) => {
        const process = processSpanOf(spans, updateId)
        return process === undefined ? undefined : { spans, process }
      })
      const tree = traceOf(spans, process)
      assert.strictEqual(process.status.code, 2, tree)
      assert.isNotEmpty(process.status.message)
      const exception = process.events.find((event) => event.name === "exception")
      assert.isDefined(exception, `events: ${process.events.map((event) => event.name).join(", ")}`)
      assert.include(String(exception!.attributes["exception.type"]), "SqlError")
      assert.isNotEmpty(String(exception!.attributes["exception.message"] ?? ""))
      assert.strictEqual(process.attributes["steadfast.outcome"], "dead")
      const handler = descendantsOf(spans, process).find((span) => span.name === "Handler.start")
      assert.strictEqual(handler?.status.code, 2, tree)

      const row = yield* traceRow(db, updateId)
      assert.strictEqual(row?.status, "dead")
      assert.strictEqual(row?.trace_id, process.traceId)
    }))

  it.effect("log lines written while an update is processed are exported with the trace and span ids of its processing", () =>
    Effect.gen(function*() {
      const { receiver, service } = yield* Exporting
      // A `message` without a chat: Bot fails it as InvalidUpdate, and the failure is logged.
      const updateId = 1003
      assert.strictEqual(yield* postStatus(service.baseUrl, `{"update_id":${updateId},"message":{"message_id":1,"text":"/start"}}`), 200)

      const { spans, process, record } = yield* receiver.waitFor(({ spans, logs }) => {
        const process = processSpanOf(spans, updateId)
        const record = logs.find((log) => String(log.body).startsWith(`update ${updateId} `))
        return process === undefined || record === undefined ? undefined : { spans, process, record }
      })
      assert.strictEqual(process.attributes["steadfast.outcome"], "dead")
      assert.strictEqual(record.severityText, "Error")
      assert.strictEqual(record.traceId, process.traceId)
      assert.isTrue(
        [process, ...descendantsOf(spans, process)].some((span) => span.spanId === record.spanId),
        `log span ${record.spanId} is not in\n${traceOf(spans, process)}`
      )
      // The same ids as plain attributes, for log backends that do not read the record's context.
      assert.strictEqual(record.attributes["trace_id"], process.traceId)
      assert.strictEqual(record.attributes["span_id"], process.spanId)
      assert.strictEqual(record.attributes["update_id"], updateId)
      assert.strictEqual(record.resource["service.name"], "steadfast-test")
    }))

  it.effect("pool metrics follow the conventions; used connections rise under load, return to the LISTEN baseline, and PostgreSQL sees at least as many", () =>
    Effect.gen(function*() {
      const { db, receiver, service, standIn } = yield* Exporting
      const metrics = yield* awaitMetrics(receiver, POOL_METRICS.map(([name]) => name))
      for (const [name, unit, type] of POOL_METRICS) {
        const metric = metrics.find((candidate) => candidate.name === name)!
        assert.strictEqual(metric.unit, unit, name)
        assert.strictEqual(metric.type, type, name)
        for (const point of metric.dataPoints) {
          assert.strictEqual(point.attributes["db.client.connection.pool.name"], APPLICATION_NAME, name)
        }
      }
      // At least the warm connections were created, each one timed.
      assert.isAtLeast(lastCount(metrics, "db.client.connection.create_time"), 2)
      const states = new Set(pointsOf(metrics, "db.client.connection.count").map((point) => point.attributes["db.client.connection.state"]))
      assert.deepStrictEqual([...states].sort(), ["idle", "used"])
      assert.strictEqual(pointsOf(metrics, "db.client.connection.max").at(-1)?.value, POOL_MAX)
      assert.strictEqual(pointsOf(metrics, "db.client.connection.idle.max").at(-1)?.value, POOL_MAX)

      // Load: rounds of 200 /start updates. The gauge is sampled at each export, so a round
      // whose peak fell between two samples is followed by one more.
      const loadStart = yield* nowNanos
      let peakUsed = 0
      let peakOpen = 0
      for (let round = 0; round < 2 && peakUsed < 3; round++) {
        peakOpen = Math.max(peakOpen, yield* loadRound({ db, service, standIn }, 20_000 + 200 * round))
        // Every sample taken during the round has been exported once a later one has.
        const roundEnd = yield* nowNanos
        yield* receiver.waitFor((received) => usedSince(received, roundEnd).length > 0 ? true : undefined)
        const values = usedSince(yield* receiver.snapshot, loadStart).map((point) => point.value ?? 0)
        peakUsed = Math.max(...values)
        // A gauge that never moved is stuck, not unlucky: another round would not help.
        if (new Set(values).size === 1) break
      }
      assert.isAtLeast(peakUsed, 3, "used connections rose above the idle baseline under load")
      assert.isAtMost(peakUsed, POOL_MAX)

      // Back to the baseline: only the LISTEN connection stays in use.
      const quiet = yield* nowNanos
      yield* receiver.waitFor((received) => usedSince(received, quiet).some((point) => point.value === 1) ? true : undefined)
      const after = yield* receiver.snapshot
      const usedValues = usedSince(after, loadStart).map((point) => point.value ?? 0)
      assert.isAtLeast(Math.min(...usedValues), 1, "the LISTEN connection holds one slot throughout")

      // PostgreSQL's side. Pool connections stay open after use (idle timeout 60 s), so the
      // sessions open now number at least the most that were ever in use at once; and the slot
      // held for good is the LISTEN session. A slot goes back just after its connection, so for
      // that moment the gauge may count one slot whose connection already serves the next holder.
      const sessions = yield* poolSessions(db)
      assert.strictEqual(sessions.listening, 1)
      assert.isAtLeast(sessions.open + 1, peakUsed, `open sessions ${sessions.open}, peak used ${peakUsed}`)
      assert.isAtLeast(peakOpen, 1)
      assert.isAtMost(Math.max(sessions.open, peakOpen), POOL_MAX, "never more sessions than the pool allows")

      // Each /start update wrote its user in a transaction, so took a slot: the histograms
      // counted hundreds of acquisitions during the load.
      for (const name of ["db.client.connection.wait_time", "db.client.connection.use_time"]) {
        assert.isAtLeast(lastCount(after.metrics, name) - lastCount(metrics, name), 200, name)
      }
      assert.strictEqual(pointsOf(after.metrics, "db.client.connection.timeouts").at(-1)?.value, 0)

      // HTTP and the service's own metrics.
      for (const [name, unit, attributes] of SERVICE_METRICS) {
        assert.isNotEmpty(pointsOf(after.metrics, name, attributes), `${name} with ${JSON.stringify(attributes)}`)
        assert.strictEqual(after.metrics.find((metric) => metric.name === name)?.unit, unit, name)
      }
      assert.isAtLeast(pointsOf(after.metrics, "steadfast.updates.received", { "telegram.update.kind": "message" }).at(-1)?.value ?? 0, 200)
      assert.isAtLeast(pointsOf(after.metrics, "steadfast.updates.processed", { outcome: "done" }).at(-1)?.value ?? 0, 200)
      assert.isAtLeast(pointsOf(after.metrics, "http.server.request.duration", SERVICE_METRICS[0]![2]).at(-1)?.count ?? 0, 200)
    }))

  it.effect("spans, metrics and logs name the service, its version and this process's instance id; another process has another id", () =>
    Effect.gen(function*() {
      const { receiver } = yield* Exporting
      const received = yield* receiver.waitFor((r) => r.spans.length > 0 && r.metrics.length > 0 && r.logs.length > 0 ? r : undefined)
      const resources = [...received.spans, ...received.metrics, ...received.logs].map((item) => item.resource)
      const instanceIds = new Set(resources.map((resource) => resource["service.instance.id"]))
      assert.strictEqual(instanceIds.size, 1, "one instance id for every signal of one process")
      const [instanceId] = instanceIds
      assert.match(String(instanceId), /^[0-9a-f-]{36}$/)
      for (const resource of resources) {
        assert.strictEqual(resource["service.name"], "steadfast-test")
        assert.strictEqual(resource["service.version"], packageJson.version)
      }

      const other = yield* makeOtlpReceiver()
      const databaseUrl = yield* Effect.promise(() => freshDatabase("otel_instance"))
      // This one also asks for OTLP/JSON, but keeps protobuf for its metrics.
      const second = yield* spawnService(
        testEnv(databaseUrl, "http://127.0.0.1:9", {
          ...fastExport,
          OTEL_EXPORTER_OTLP_ENDPOINT: other.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/protobuf"
        })
      )
      const { metrics, logs, requests } = yield* other.waitFor((r) => r.metrics.length > 0 && r.logs.length > 0 ? r : undefined)
      assert.isString(metrics[0]?.resource["service.instance.id"])
      assert.notStrictEqual(metrics[0]?.resource["service.instance.id"], instanceId)
      assert.strictEqual(logs[0]?.resource["service.instance.id"], metrics[0]?.resource["service.instance.id"])
      const types = (signal: string) => new Set(requests.filter((r) => r.signal === signal).map((r) => r.contentType))
      assert.deepStrictEqual([...types("logs")], ["application/json"])
      assert.deepStrictEqual([...types("metrics")], ["application/x-protobuf"])
      yield* second.kill("SIGTERM")
      yield* second.exited
    }).pipe(Effect.scoped))

  it.effect("the bot token, the webhook secret and the database password appear in no exported request", () =>
    Effect.gen(function*() {
      const { receiver } = yield* Exporting
      const requests = yield* receiver.waitFor(({ requests }) =>
        ["traces", "metrics", "logs"].every((signal) => requests.some((r) => r.signal === signal)) ? requests : undefined
      )
      // OpenTelemetry's default protocol, with nothing set but the endpoint: OTLP/protobuf.
      assert.isTrue(requests.every((r) => r.contentType === "application/x-protobuf"))
      assert.isTrue(requests.every((r) => r.contentEncoding === "gzip"))
      const secrets = [TEST_TOKEN, TEST_TOKEN.split(":")[1]!, encodeURIComponent(TEST_TOKEN), TEST_SECRET, DB_PASSWORD]
      for (const r of requests) {
        assert.isNotNull(r.body, `${r.path}: not an OTLP request`)
        const decoded = JSON.stringify(r.body)
        for (const secret of secrets) {
          assert.notInclude(r.raw, secret, `${r.path} leaks a secret`)
          assert.notInclude(decoded, secret, `${r.path} leaks a secret`)
        }
      }
    }))
})

describe("telemetry switched off and shutdown", () => {
  it.live("with no OTEL_* variable set, the service sends nothing", () =>
    Effect.gen(function*() {
      // Listening where an exporter with default settings would send (localhost:4318), if free.
      const receiver = yield* makeOtlpReceiver({ port: 4318 }).pipe(Effect.catch(() => makeOtlpReceiver()))
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("otel_off"))
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url))
      assert.strictEqual(yield* postStatus(service.baseUrl, startUpdate(1, 5550201)), 200)
      yield* standIn.awaitCalls((calls) => calls.some((call) => call.method === "sendMessage"), "20 seconds")
      yield* service.kill("SIGTERM")
      yield* service.exited.pipe(Effect.timeout("20 seconds"))
      assert.deepStrictEqual((yield* receiver.requests).map((r) => r.path), [])
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("spans the export queue cannot hold are counted in steadfast.telemetry.lost and reported in a warning", () =>
    Effect.gen(function*() {
      const receiver = yield* makeOtlpReceiver()
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("otel_lost"))
      // A queue of 4 spans, exported only every 10 minutes (or once 4 are queued).
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url, {
        ...fastExport,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_MAX_QUEUE_SIZE: "4",
        OTEL_BSP_SCHEDULE_DELAY: "600000",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "4096"
      }))
      // A burst: spans end faster than a queue of 4 is handed to the exporter.
      const statuses = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (i) => postStatus(service.baseUrl, startUpdate(4001 + i, 5550401 + i)),
        { concurrency: 20 }
      )
      assert.deepStrictEqual(new Set(statuses), new Set([200]))
      yield* standIn.awaitCalls((calls) => calls.filter((call) => call.method === "sendMessage").length >= 20, "20 seconds")
      const lost = yield* receiver.waitFor(({ metrics }) => {
        const point = pointsOf(metrics, "steadfast.telemetry.lost", { signal: "spans", reason: "queue_full" }).at(-1)
        return point !== undefined && (point.value ?? 0) > 0 ? point.value : undefined
      })
      assert.isAbove(lost ?? 0, 0)
      const warning = yield* service.waitForOutput(/telemetry: dropped \d+ spans \(export queue full\)/)
      assert.notInclude(warning, TEST_TOKEN)
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("SIGTERM: the process exits 0 and the spans, metrics and logs still buffered are flushed before it does", () =>
    Effect.gen(function*() {
      const receiver = yield* makeOtlpReceiver()
      const standIn = yield* BotApiRecorder
      const { pg, url } = yield* databaseWithOwnRole("otel_flush")
      // Nothing is exported on a timer within the test: whatever arrives was flushed at shutdown.
      const service = yield* spawnService(testEnv(url, standIn.url, {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_SERVICE_NAME: "steadfast-test",
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
        OTEL_BSP_SCHEDULE_DELAY: "600000",
        OTEL_BLRP_SCHEDULE_DELAY: "600000"
      }))
      const updateId = 3001
      assert.strictEqual(yield* postStatus(service.baseUrl, startUpdate(updateId, 5550301)), 200)
      yield* standIn.awaitCalls((calls) => calls.some((call) => call.method === "sendMessage"), "20 seconds")
      yield* eventually("the update done", pg.inboxStatuses, (statuses) => statuses["done"] === 1, { timeout: "20 seconds" })
      assert.deepStrictEqual((yield* receiver.requests).map((r) => r.path), [], "nothing exported before shutdown")

      yield* service.kill("SIGTERM")
      const exit = yield* service.exited.pipe(Effect.timeout("30 seconds"))
      assert.deepStrictEqual(exit, { code: 0, signal: null }, yield* service.output)

      yield* receiver.waitFor((received) => {
        const process = processSpanOf(received.spans, updateId)
        const complete = process !== undefined &&
          webhookSpanOf(received.spans, process) !== undefined &&
          spansNamed(received.spans, "BotApi.sendMessage").some((span) => span.traceId === process.traceId) &&
          pointsOf(received.metrics, "steadfast.updates.processed", { outcome: "done" }).length > 0 &&
          received.logs.some((log) => String(log.body).startsWith("Listening on"))
        return complete ? received : undefined
      }, "5 seconds")
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live("a fatal error: the process exits 1 and the logs still buffered, its fatal line included, are flushed before it does", () =>
    Effect.gen(function*() {
      const receiver = yield* makeOtlpReceiver()
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("otel_fatal_flush"))
      // Nothing is exported on a timer within the test: whatever arrives was flushed on the way out.
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url, {
        NODE_OPTIONS: `--import=${fileURLToPath(new URL("../support/FatalTrigger.ts", import.meta.url))}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_SERVICE_NAME: "steadfast-test",
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
        OTEL_BSP_SCHEDULE_DELAY: "600000",
        OTEL_BLRP_SCHEDULE_DELAY: "600000"
      }))
      assert.deepStrictEqual((yield* receiver.requests).map((r) => r.path), [], "nothing exported before the fatal error")
      yield* service.kill("SIGWINCH")
      const exit = yield* service.exited.pipe(Effect.timeout("30 seconds"))
      assert.deepStrictEqual(exit, { code: 1, signal: null }, yield* service.output)
      yield* receiver.waitFor(
        (received) => received.logs.some((log) => String(log.body).includes("uncaught exception; exiting")) ? received : undefined,
        "5 seconds"
      )
    }).pipe(Effect.provide(BotApiRecorder.layer())))
})
