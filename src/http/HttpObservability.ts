import { Effect, Exit, Layer, Metric } from "effect"
import { HttpMiddleware, HttpServerRequest } from "effect/http"
import * as Metrics from "../observability/Metrics.ts"

const durationBy = Metrics.tagged(Metrics.httpServerDuration)

const ROUTES = new Set(["/webhook", "/health", "/health/live"])

/** The matched route, or a fixed label so unknown paths cannot blow up metric cardinality. */
const routeOf = (request: HttpServerRequest.HttpServerRequest) => {
  const path = request.url.split("?", 1)[0] ?? ""
  return ROUTES.has(path) ? path : "unmatched"
}

/**
 * Server spans named `{method} {route}` as the HTTP conventions ask; health probes are not
 * traced (a monitor polling every few seconds would drown the real traces).
 */
export const HttpTracing = Layer.mergeAll(
  Layer.succeed(HttpMiddleware.SpanNameGenerator)((request) => `${request.method} ${routeOf(request)}`),
  HttpMiddleware.layerTracerDisabledForUrls(["/health", "/health/live"])
)

/** `http.server.request.duration` with method, route and status code. */
export const requestDuration = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const startedAt = performance.now()
    return yield* Effect.onExit(app, (exit) =>
      Metric.update(
        durationBy({
          "http.request.method": request.method,
          "http.route": routeOf(request),
          "http.response.status_code": String(Exit.isSuccess(exit) ? exit.value.status : 500)
        }),
        (performance.now() - startedAt) / 1000
      ))
  })
)
