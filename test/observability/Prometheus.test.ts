// GET /metrics scraped from the real process (`node src/main.ts`) on METRICS_PORT.
import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Metric, Schedule } from "effect"
import { connect, type Socket } from "node:net"
import { networkInterfaces } from "node:os"
import { HTTP_LIMITS } from "../../src/http/ListenerLimits.ts"
import { prometheusName, render } from "../../src/observability/Prometheus.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { fetchText, families, scrapeAfterOneUpdate } from "../support/Prometheus.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_TOKEN, testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"

/** The nine metrics of OpenTelemetry's database client connection pool conventions. */
const POOL_METRICS = [
  ["db_client_connection_count", "gauge"],
  ["db_client_connection_idle_max", "gauge"],
  ["db_client_connection_idle_min", "gauge"],
  ["db_client_connection_max", "gauge"],
  ["db_client_connection_pending_requests", "gauge"],
  ["db_client_connection_timeouts_total", "counter"],
  ["db_client_connection_create_time_seconds", "histogram"],
  ["db_client_connection_wait_time_seconds", "histogram"],
  ["db_client_connection_use_time_seconds", "histogram"]
] as const

const RUNTIME_METRICS = [
  ["process_cpu_time_seconds_total", "counter"],
  ["process_memory_usage_bytes", "gauge"],
  ["process_uptime_seconds", "gauge"],
  ["nodejs_eventloop_delay_p99_seconds", "gauge"],
  ["nodejs_eventloop_delay_mean_seconds", "gauge"],
  ["nodejs_eventloop_utilization_ratio", "gauge"],
  ["nodejs_heap_size_limit_bytes", "gauge"],
  ["v8js_memory_heap_used_bytes", "gauge"],
  ["v8js_memory_heap_limit_bytes", "gauge"]
] as const

describe("Prometheus names", () => {
  it("carry the unit as a word and counters end in _total, by OpenTelemetry's compatibility rules", () => {
    assert.strictEqual(prometheusName("http.server.request.duration", "Histogram", "s"), "http_server_request_duration_seconds")
    assert.strictEqual(prometheusName("db.client.connection.timeouts", "Counter", "{timeout}"), "db_client_connection_timeouts_total")
    assert.strictEqual(prometheusName("process.cpu.time", "Counter", "s"), "process_cpu_time_seconds_total")
    assert.strictEqual(prometheusName("process.memory.usage", "Gauge", "By"), "process_memory_usage_bytes")
    assert.strictEqual(prometheusName("nodejs.eventloop.utilization", "Gauge", "1"), "nodejs_eventloop_utilization_ratio")
    assert.strictEqual(prometheusName("steadfast.inbox.backlog", "Gauge", "{update}"), "steadfast_inbox_backlog")
    assert.strictEqual(prometheusName("steadfast.build_info", "Gauge", undefined), "steadfast_build_info")
    assert.strictEqual(prometheusName("net.io", "Counter", "By/s"), "net_io_bytes_per_seconds_total")
    // Already suffixed names are not suffixed twice.
    assert.strictEqual(prometheusName("queue.wait_seconds", "Gauge", "s"), "queue_wait_seconds")
    assert.strictEqual(prometheusName("jobs_total", "Counter", "{job}"), "jobs_total")
  })

  it.effect("the rendered registry uses them while the metrics keep their OpenTelemetry names", () =>
    Effect.gen(function*() {
      const counter = Metric.counter("test.render.sent", { attributes: { unit: "{message}" }, incremental: true })
      const timer = Metric.histogram("test.render.latency", { boundaries: [0.1, 1], attributes: { unit: "s" } })
      yield* Metric.update(Metric.withAttributes(counter, { outcome: "ok" }), 2)
      yield* Metric.update(timer, 0.5)
      const text = yield* render
      assert.match(text, /^# TYPE test_render_sent_total counter$/m)
      assert.match(text, /^test_render_sent_total\{outcome="ok"\} 2$/m)
      assert.match(text, /^test_render_latency_seconds_bucket\{le="1"\} 1$/m)
      assert.notMatch(text, /unit=/)
      assert.strictEqual(counter.id, "test.render.sent")
    }))
})

describe("Prometheus", () => {
  it.live("METRICS_PORT serves the pool, runtime, HTTP and update metrics by the naming conventions, on its own port only", () =>
    Effect.gen(function*() {
      const { metricsUrl, scrape, service, stored } = yield* scrapeAfterOneUpdate("prometheus", 8001, 5550801, {
        NODE_OPTIONS: "--max-old-space-size=160 --max-semi-space-size=16"
      })
      assert.strictEqual(stored, 200)
      assert.notStrictEqual(new URL(metricsUrl).port, new URL(service.baseUrl).port)
      assert.strictEqual(scrape.status, 200)
      assert.match(scrape.contentType, /^text\/plain; version=0\.0\.4/)

      const found = families(scrape.body)
      for (const [name, type] of [...POOL_METRICS, ...RUNTIME_METRICS]) assert.strictEqual(found.get(name), type, name)
      assert.strictEqual([...found.keys()].filter((name) => name.startsWith("db_client_connection_")).length, 9)
      assert.match(scrape.body, /^db_client_connection_idle_max\{[^}]*\} 10$/m)
      assert.match(scrape.body, /^process_cpu_time_seconds_total\{cpu_mode="user"\} /m)
      assert.match(scrape.body, /^steadfast_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m)
      const sample = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(scrape.body)?.[1])
      assert.isAbove(sample("process_memory_usage_bytes"), 10 * 2 ** 20)
      assert.isAbove(sample("process_uptime_seconds"), 0)
      // The heap cap from NODE_OPTIONS is what an operator sees: old space plus three semi-spaces.
      assert.closeTo(sample("nodejs_heap_size_limit_bytes") / 2 ** 20, 160 + 3 * 16, 4)
      assert.strictEqual(found.get("http_server_request_duration_seconds"), "histogram")
      assert.match(scrape.body, /^http_server_request_duration_seconds_count\{[^}]*http_route="\/webhook"[^}]*\} [1-9]/m)
      assert.match(scrape.body, /^steadfast_updates_received_total\{[^}]*\} [1-9]/m)
      // Every counter ends in _total, and no family keeps a bare OpenTelemetry unit.
      for (const [name, type] of found) {
        if (type === "counter") assert.match(name, /_total$/, name)
        assert.notMatch(name, /_s$|_By$|_ms$/, name)
      }
      assert.notInclude(scrape.body, TEST_TOKEN.split(":")[1]!)

      const onWebhookPort = yield* fetchText(`${service.baseUrl}/metrics`)
      assert.strictEqual(onWebhookPort.status, 404)

      yield* service.kill("SIGTERM")
      assert.deepStrictEqual(yield* service.exited, { code: 0, signal: null })
    }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer())))

  it.live("without METRICS_PORT nothing listens besides the service", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("prometheus_off"))
      const service = yield* spawnService(testEnv(databaseUrl, "http://127.0.0.1:9"))
      assert.notMatch(yield* service.output, /\/metrics/)
      assert.strictEqual((yield* fetchText(`${service.baseUrl}/metrics`)).status, 404)
    }).pipe(Effect.scoped))

  it.live(
    "the metrics listener binds 127.0.0.1 by default, has the main server's limits and a small connection cap",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("prometheus_bounded"))
        // HOST=0.0.0.0 for the main port: the metrics port stays on 127.0.0.1 all the same.
        const service = yield* spawnService(testEnv(databaseUrl, "http://127.0.0.1:9", { METRICS_PORT: "0", HOST: "0.0.0.0" }))
        const metricsUrl = new URL(yield* service.waitForOutput(/http:\/\/[^\s/]+:\d+\/metrics/))
        assert.strictEqual(metricsUrl.hostname, "127.0.0.1")
        const port = Number(metricsUrl.port)
        const external = Object.values(networkInterfaces()).flat().find((a) => a?.family === "IPv4" && !a.internal)
        if (external !== undefined) {
          const reached = yield* openSocket(external.address, port).pipe(Effect.as(true), Effect.catch(() => Effect.succeed(false)))
          assert.isFalse(reached, `metrics reachable on ${external.address}`)
        }

        // The cap: the 17th socket is closed on arrival while 16 hang.
        const startedAt = yield* Clock.currentTimeMillis
        const held = yield* Effect.forEach(Array.from({ length: HTTP_LIMITS.metricsMaxConnections }, () => 0), () =>
          Effect.tap(openSocket("127.0.0.1", port), (s) => Effect.sync(() => s.socket.write("GET /metr"))))
        const extra = yield* openSocket("127.0.0.1", port)
        yield* Deferred.await(extra.closed).pipe(Effect.timeout("5 seconds"))
        assert.isTrue(held.every(({ socket }) =>
          !socket.destroyed
        ))

        // The headers timeout: the 16 hanging sockets are closed by the server, not after Node's 60 s.
        yield* Effect.forEach(held, ({ closed }) => Deferred.await(closed), { discard: true }).pipe(
          Effect.timeout(HTTP_LIMITS.headersTimeoutMs + 10_000)
        )
        assert.isAtLeast((yield* Clock.currentTimeMillis) - startedAt, HTTP_LIMITS.headersTimeoutMs - 1_000)
        // Once they are gone, a scrape is served again. (The server counts a socket out a moment after
        // this side saw it close: a scrape in that moment is still refused, so it is tried again.)
        const scrape = yield* fetchText(metricsUrl.href).pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 50 }))
        assert.strictEqual(scrape.status, 200)
        assert.strictEqual((yield* fetchText(`http://127.0.0.1:${port}/other`)).status, 404)
      }).pipe(Effect.scoped),
    60_000
  )
})

/** A raw TCP socket; `closed` completes when the other side (or an error) closes it. */
const openSocket = (host: string, port: number) =>
  Effect.gen(function*() {
    const closed = yield* Deferred.make<void>()
    const connected = yield* Deferred.make<void, Error>()
    const socket = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const socket: Socket = connect({ host, port })
        socket.on("connect", () => Deferred.doneUnsafe(connected, Effect.void))
        socket.on("error", (error) => Deferred.doneUnsafe(connected, Effect.fail(error)))
        socket.on("close", () => Deferred.doneUnsafe(closed, Effect.void))
        socket.on("data", () => undefined)
        return socket
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    yield* Deferred.await(connected).pipe(Effect.timeout("5 seconds"))
    return { socket, closed }
  })
