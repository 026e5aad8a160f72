import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer, Option } from "effect"
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { metricsListen } from "../Config.ts"
import { render } from "../observability/Prometheus.ts"
import { boundedServer, HTTP_LIMITS } from "./ListenerLimits.ts"

/**
 * METRICS_PORT set: `GET /metrics` in the Prometheus text format, on a server of its own so the
 * public webhook port never exposes it. It renders the same metric registry OTLP exports. It
 * has no authentication, so it binds 127.0.0.1 unless METRICS_HOST says otherwise, and it has
 * the main server's timeouts with a small connection cap. Nothing on it is traced (one span per
 * scrape would drown the real traces).
 */
export const MetricsServer = {
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
