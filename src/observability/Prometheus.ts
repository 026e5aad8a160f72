import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer, Metric, Option } from "effect"
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { metricsListen } from "../Config.ts"
import { boundedServer, HTTP_LIMITS } from "../http/ListenerLimits.ts"

/** Unit suffixes by OpenTelemetry's Prometheus compatibility rules (UCUM unit → word). */
const UNIT_WORDS: Record<string, string> = {
  s: "seconds",
  ms: "milliseconds",
  us: "microseconds",
  ns: "nanoseconds",
  By: "bytes",
  KiBy: "kibibytes",
  MiBy: "mebibytes",
  "%": "percent"
}

const sanitize = (name: string) => name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/_+/g, "_").replace(/^_|_$/g, "")

/**
 * The Prometheus name of a metric whose OpenTelemetry name is `name`: dots become underscores,
 * the unit is appended as a word (`s` → `_seconds`, `By` → `_bytes`, a gauge's `1` → `_ratio`;
 * an annotation such as `{update}` adds nothing), and a counter ends in `_total`. These are the
 * rules the OpenTelemetry Collector's Prometheus exporter applies, so a series has one name
 * whichever way it is scraped.
 */
export const prometheusName = (name: string, type: Metric.Metric.Type, unit: string | undefined): string => {
  let result = sanitize(name)
  const word = unit === undefined || unit.startsWith("{")
    ? undefined
    : unit === "1"
    ? (type === "Gauge" ? "ratio" : undefined)
    : unit.includes("/")
    ? unit.split("/").map((part) => UNIT_WORDS[part] ?? sanitize(part)).join("_per_")
    : UNIT_WORDS[unit] ?? sanitize(unit)
  if (word !== undefined && word !== "" && !result.endsWith(`_${word}`)) result = `${result}_${word}`
  if ((type === "Counter" || type === "Frequency") && !result.endsWith("_total")) result = `${result}_total`
  return result
}

/** The registry in the Prometheus text format, with names by `prometheusName`. */
export const render = Effect.gen(function*() {
  const snapshot = yield* Metric.snapshot
  const names = new Map<string, string>()
  for (const metric of snapshot) {
    if (!names.has(metric.id)) names.set(metric.id, prometheusName(metric.id, metric.type, metric.attributes?.["unit"]))
  }
  return yield* PrometheusMetrics.format({ metricNameMapper: (id) => names.get(id) ?? id })
})

/**
 * METRICS_PORT set: `GET /metrics` in the Prometheus text format, on a server of its own so the
 * public webhook port never exposes it. It renders the same metric registry OTLP exports. It
 * has no authentication, so it binds 127.0.0.1 unless METRICS_HOST says otherwise, and it has
 * the main server's timeouts with a small connection cap. Nothing on it is traced (one span per
 * scrape would drown the real traces).
 */
export const Prometheus = {
  layer: Layer.unwrap(Effect.gen(function*() {
    const listen = yield* metricsListen
    if (Option.isNone(listen)) return Layer.empty
    const { host, port } = listen.value
    const announce = Layer.effectDiscard(Effect.gen(function*() {
      const server = yield* HttpServer.HttpServer
      const bound = server.address._tag === "UnixPathAddress" ? port : server.address.port
      yield* Effect.logInfo(`Prometheus metrics on http://${host}:${bound}/metrics`)
    }))
    const route = HttpRouter.add(
      "GET",
      "/metrics",
      Effect.map(render, (body) => HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" }))
    )
    const makeServer = () =>
      boundedServer({
        maxConnections: HTTP_LIMITS.metricsMaxConnections,
        maxConnectionsPerAddress: HTTP_LIMITS.metricsMaxConnections
      })
    return Layer.merge(HttpRouter.serve(route, { disableLogger: true, disableListenLog: true }), announce).pipe(
      Layer.provide(Layer.succeed(HttpMiddleware.TracerDisabledWhen)(() => true)),
      Layer.provide(NodeHttpServer.layer(makeServer, { port, host, gracefulShutdownTimeout: "1 second" }))
    )
  }))
}
