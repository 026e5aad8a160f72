// GET /metrics scraped from the real process (`node src/main.ts`) on METRICS_PORT.
import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Schedule } from "effect"
import { request } from "node:http"
import { connect, type Socket } from "node:net"
import { networkInterfaces } from "node:os"
import { HTTP_LIMITS } from "../../src/http/ListenerLimits.ts"
import { BotApiStandIn } from "../../src/sandbox/BotApiStandIn.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { TEST_TOKEN, testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"
import { postWebhook } from "../support/TestHttp.ts"

const fetchText = (url: string) =>
  Effect.callback<{ readonly status: number; readonly contentType: string; readonly body: string }, Error>((resume) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.once("end", () =>
        resume(Effect.succeed({
          status: res.statusCode ?? 0,
          contentType: String(res.headers["content-type"]),
          body: Buffer.concat(chunks).toString("utf8")
        })))
    })
    req.once("error", (error) => resume(Effect.fail(error)))
    req.end()
  }).pipe(Effect.orDie)

const POOL_METRICS = [
  "db_client_connection_count",
  "db_client_connection_max",
  "db_client_connection_idle_min",
  "db_client_connection_pending_requests",
  "db_client_connection_timeouts",
  "db_client_connection_wait_time",
  "db_client_connection_use_time",
  "db_client_connection_create_time"
]

describe("Prometheus", () => {
  it.live("METRICS_PORT serves the pool, HTTP and update metrics in the text format, on its own port only", () =>
    Effect.gen(function*() {
      const standIn = yield* BotApiStandIn
      const databaseUrl = yield* Effect.promise(() => freshDatabase("prometheus"))
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url, { METRICS_PORT: "0" }))
      const metricsUrl = yield* service.waitForOutput(/http:\/\/127\.0\.0\.1:\d+\/metrics/)
      assert.notStrictEqual(new URL(metricsUrl).port, new URL(service.baseUrl).port)

      const update = JSON.stringify(sampleUpdate({ updateId: 8001, chatId: 5550801, text: "/start" }))
      assert.strictEqual(yield* postWebhook(service.baseUrl, update), 200)

      // Wait for the update's outcome to be counted, then read everything from that scrape.
      const scrape = yield* fetchText(metricsUrl).pipe(
        Effect.repeat({
          schedule: Schedule.spaced("100 millis"),
          until: (r) => /steadfast_updates_processed\{[^}]*outcome="done"/.test(r.body)
        }),
        Effect.timeout("30 seconds")
      )
      assert.strictEqual(scrape.status, 200)
      assert.match(scrape.contentType, /^text\/plain; version=0\.0\.4/)
      for (const name of POOL_METRICS) assert.match(scrape.body, new RegExp(`^# TYPE ${name} `, "m"), name)
      assert.match(scrape.body, /^# TYPE http_server_request_duration histogram$/m)
      assert.match(scrape.body, /^http_server_request_duration_count\{[^}]*http_route="\/webhook"[^}]*\} [1-9]/m)
      assert.match(scrape.body, /^steadfast_updates_received\{[^}]*\} [1-9]/m)
      assert.notInclude(scrape.body, TEST_TOKEN.split(":")[1]!)

      const onWebhookPort = yield* fetchText(`${service.baseUrl}/metrics`)
      assert.strictEqual(onWebhookPort.status, 404)

      yield* service.kill("SIGTERM")
      assert.deepStrictEqual(yield* service.exited, { code: 0, signal: null })
    }).pipe(Effect.scoped, Effect.provide(BotApiStandIn.layer())))

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
        // Once they are gone, a scrape is served again.
        assert.strictEqual((yield* fetchText(metricsUrl.href)).status, 200)
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
