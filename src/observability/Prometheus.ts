import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer, Option } from "effect"
import { HttpMiddleware, HttpRouter, HttpServer } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createServer } from "node:http"
import { AppConfig, metricsPort } from "../Config.ts"

/**
 * METRICS_PORT set: `GET /metrics` in the Prometheus text format, on a server of its own so the
 * public webhook port never exposes it. It renders the same metric registry OTLP exports.
 * Scrapes are not traced (one span every 15 s would drown the real traces).
 */
export const Prometheus = {
  layer: Layer.unwrap(Effect.gen(function*() {
    const port = yield* metricsPort
    if (Option.isNone(port)) return Layer.empty
    const config = yield* AppConfig
    const announce = Layer.effectDiscard(Effect.gen(function*() {
      const server = yield* HttpServer.HttpServer
      const bound = server.address._tag === "UnixPathAddress" ? port.value : server.address.port
      yield* Effect.logInfo(`Prometheus metrics on http://${config.host}:${bound}/metrics`)
    }))
    return Layer.merge(
      HttpRouter.serve(PrometheusMetrics.layerHttp(), { disableLogger: true, disableListenLog: true }),
      announce
    ).pipe(
      Layer.provide(HttpMiddleware.layerTracerDisabledForUrls(["/metrics"])),
      Layer.provide(NodeHttpServer.layer(createServer, { port: port.value, host: config.host }))
    )
  }))
}
