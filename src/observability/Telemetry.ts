import { Config, Effect, Layer, Option } from "effect"

const setting = (name: string) =>
  Config.option(Config.String(name)).pipe(Effect.map(Option.filter((value) => value.trim() !== "")), Effect.orElseSucceed(() => Option.none<string>()))

/** A positive integer setting, or none when unset or invalid. */
const positive = (name: string) =>
  Effect.map(setting(name), Option.flatMap((value) => {
    const n = Number(value)
    return Number.isInteger(n) && n > 0 ? Option.some(n) : Option.none()
  }))

/** A signal is exported when an endpoint reaches it and its OTEL_<SIGNAL>_EXPORTER is not `none`. */
const signalEnabled = (signal: "TRACES" | "METRICS" | "LOGS", anyEndpoint: boolean) =>
  Effect.gen(function*() {
    const exporter = yield* setting(`OTEL_${signal}_EXPORTER`)
    if (Option.isSome(exporter) && exporter.value === "none") return false
    return anyEndpoint || Option.isSome(yield* setting(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`))
  })

/**
 * Traces, metrics and logs over OTLP/HTTP. The OpenTelemetry exporters read the standard
 * variables themselves (OTEL_EXPORTER_OTLP_ENDPOINT, per-signal endpoints, OTEL_EXPORTER_OTLP_HEADERS,
 * timeouts); the resource takes OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. With no endpoint
 * at all (or OTEL_SDK_DISABLED=true) this is an empty layer: nothing is exported or buffered.
 * Provided outermost, it starts first and flushes last, after every other layer has closed.
 */
export const Telemetry = {
  layer: Layer.unwrap(Effect.gen(function*() {
    const disabled = Option.getOrElse(yield* setting("OTEL_SDK_DISABLED"), () => "false") === "true"
    const endpoint = Option.isSome(yield* setting("OTEL_EXPORTER_OTLP_ENDPOINT"))
    const traces = !disabled && (yield* signalEnabled("TRACES", endpoint))
    const metrics = !disabled && (yield* signalEnabled("METRICS", endpoint))
    const logs = !disabled && (yield* signalEnabled("LOGS", endpoint))
    if (!traces && !metrics && !logs) return Layer.empty
    const serviceName = Option.getOrElse(yield* setting("OTEL_SERVICE_NAME"), () => "steadfast")
    const exportInterval = Number(Option.getOrElse(yield* setting("OTEL_METRIC_EXPORT_INTERVAL"), () => "10000"))
    // The span processor reads OTEL_BSP_* itself; sdk-logs 0.223 ignores OTEL_BLRP_*, so they are passed here.
    const logBatching = Object.fromEntries(
      (yield* Effect.forEach([
        ["scheduledDelayMillis", "OTEL_BLRP_SCHEDULE_DELAY"],
        ["exportTimeoutMillis", "OTEL_BLRP_EXPORT_TIMEOUT"],
        ["maxQueueSize", "OTEL_BLRP_MAX_QUEUE_SIZE"],
        ["maxExportBatchSize", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"]
      ] as const, ([option, name]) => Effect.map(positive(name), Option.map((value) => [option, value] as const))))
        .flatMap(Option.toArray)
    )
    // Loaded only when something is exported: the SDK adds tens of megabytes to the process.
    const [NodeSdk, { OTLPLogExporter }, { OTLPMetricExporter }, { OTLPTraceExporter }, { BatchLogRecordProcessor }, {
      PeriodicExportingMetricReader
    }, { BatchSpanProcessor }] = yield* Effect.promise(() =>
      Promise.all([
        import("@effect/opentelemetry/NodeSdk"),
        import("@opentelemetry/exporter-logs-otlp-http"),
        import("@opentelemetry/exporter-metrics-otlp-http"),
        import("@opentelemetry/exporter-trace-otlp-http"),
        import("@opentelemetry/sdk-logs"),
        import("@opentelemetry/sdk-metrics"),
        import("@opentelemetry/sdk-trace-base")
      ])
    )
    return NodeSdk.layer(() => ({
      resource: { serviceName },
      ...(traces ? { spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter()) } : {}),
      ...(metrics
        ? {
          metricReader: new PeriodicExportingMetricReader({
            exporter: new OTLPMetricExporter(),
            exportIntervalMillis: Number.isFinite(exportInterval) && exportInterval > 0 ? exportInterval : 10000
          })
        }
        : {}),
      ...(logs ? { logRecordProcessor: new BatchLogRecordProcessor({ ...logBatching, exporter: new OTLPLogExporter() }) } : {}),
      shutdownTimeout: "5 seconds"
    }))
  }))
}
