import type { Counter, Meter, MeterProvider } from "@opentelemetry/api"
import { Effect, Layer, Metric, Option, Schedule } from "effect"
import { otel, otelPositive, telemetrySettings } from "../Config.ts"
import { serviceIdentity } from "./ServiceIdentity.ts"
import { layerCheapUnsampled } from "./UnsampledSpans.ts"

type Signal = "TRACES" | "METRICS" | "LOGS"

/**
 * OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else `http/protobuf`
 * (the specification's default). `grpc` is not shipped: like any value this SDK cannot honour,
 * it falls back to the default with a warning, as the specification asks of OTEL_* variables.
 */
export const otlpProtocol = Effect.fnUntraced(function*(signal: Signal) {
  const own = yield* otel(`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`)
  const value = Option.isSome(own) ? own : yield* otel("OTEL_EXPORTER_OTLP_PROTOCOL")
  if (Option.isNone(value) || value.value === "http/protobuf") return "http/protobuf" as const
  if (value.value === "http/json") return "http/json" as const
  yield* Effect.logWarning(`telemetry: OTLP protocol "${value.value}" is not supported here; ${signal.toLowerCase()} use http/protobuf`)
  return "http/protobuf" as const
})

/**
 * Batch sizes for a busy service. The SDK's defaults queue 2,048 spans, a quarter of a second
 * at 1,000 updates/s of about 9 spans each; these hold about two seconds of a stalled collector.
 * A request carries 1,024 spans: it is encoded whole in memory, and 2,048 measured a peak RSS of
 * 1.19× the same build without export (1.12× at 1,024), while 512 a second cost more CPU
 * (`npm run bench -- --telemetry`). OTEL_BSP_* / OTEL_BLRP_* override each value.
 */
export const BATCH_DEFAULTS = {
  spans: { maxQueueSize: 16_384, maxExportBatchSize: 1_024, scheduledDelayMillis: 2_000, exportTimeoutMillis: 10_000 },
  logs: { maxQueueSize: 8_192, maxExportBatchSize: 1_024, scheduledDelayMillis: 2_000, exportTimeoutMillis: 10_000 }
} as const

const spanBatching = Effect.gen(function*() {
  const read = (name: string, fallback: number) => Effect.map(otelPositive(name), Option.getOrElse(() => fallback))
  const d = BATCH_DEFAULTS.spans
  const maxQueueSize = yield* read("OTEL_BSP_MAX_QUEUE_SIZE", d.maxQueueSize)
  return {
    maxQueueSize,
    maxExportBatchSize: Math.min(maxQueueSize, yield* read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.maxExportBatchSize)),
    scheduledDelayMillis: yield* read("OTEL_BSP_SCHEDULE_DELAY", d.scheduledDelayMillis),
    exportTimeoutMillis: yield* read("OTEL_BSP_EXPORT_TIMEOUT", d.exportTimeoutMillis)
  }
})

/** Spans and log records the SDK never delivered: its queue was full, or the export failed. */
export const telemetryLost = Metric.counter("steadfast.telemetry.lost", {
  description: "Spans and log records dropped before reaching the collector (reason: queue_full or export_failed)",
  attributes: { unit: "{item}" }
})

type LostSignal = "spans" | "logs"
const lostKeys = [
  ["spans", "queue_full"],
  ["spans", "export_failed"],
  ["logs", "queue_full"],
  ["logs", "export_failed"]
] as const
const lostMetric = Object.fromEntries(
  lostKeys.map(([signal, reason]) => [`${signal}/${reason}`, Metric.withAttributes(telemetryLost, { signal, reason })])
)

/**
 * The batch processors report what they drop only to a "self-observability" meter. This one
 * keeps just that: a plain counter per signal and reason, read by a fiber every few seconds
 * (the processors call it synchronously on the span's end, so it must stay a field increment).
 */
const lossCountingMeterProvider = (base: Meter, lost: Record<string, number>, signal: LostSignal): MeterProvider => {
  const counter: Counter = {
    add: (value, attributes) => {
      const type = attributes?.["error.type"]
      if (type === undefined) return
      const key = `${signal}/${type === "queue_full" ? "queue_full" : "export_failed"}`
      lost[key] = (lost[key] ?? 0) + value
    }
  }
  const meter: Meter = {
    createCounter: () => counter,
    createGauge: base.createGauge.bind(base),
    createHistogram: base.createHistogram.bind(base),
    createUpDownCounter: base.createUpDownCounter.bind(base),
    createObservableGauge: base.createObservableGauge.bind(base),
    createObservableCounter: base.createObservableCounter.bind(base),
    createObservableUpDownCounter: base.createObservableUpDownCounter.bind(base),
    addBatchObservableCallback: base.addBatchObservableCallback.bind(base),
    removeBatchObservableCallback: base.removeBatchObservableCallback.bind(base)
  }
  return { getMeter: () => meter }
}

const REPORT_LOSS_EVERY = "5 seconds"

/** Turns the counts into `steadfast.telemetry.lost` and a warning per interval with losses. */
const reportLosses = (lost: Record<string, number>) => {
  const reported: Record<string, number> = {}
  return Effect.gen(function*() {
    const lines: Array<string> = []
    for (const [signal, reason] of lostKeys) {
      const key = `${signal}/${reason}`
      const delta = (lost[key] ?? 0) - (reported[key] ?? 0)
      if (delta <= 0) continue
      reported[key] = lost[key] ?? 0
      yield* Metric.update(lostMetric[key]!, delta)
      lines.push(`${delta} ${signal} (${reason === "queue_full" ? "export queue full" : "export failed"})`)
    }
    if (lines.length > 0) {
      yield* Effect.logWarning(`telemetry: dropped ${lines.join(", ")}; the OTLP collector is slow or unreachable`)
    }
  })
}

/**
 * Traces, metrics and logs over OTLP/HTTP, `http/protobuf` unless OTEL_EXPORTER_OTLP_PROTOCOL
 * (or a per-signal variant) says `http/json`. The exporters read the other standard variables
 * themselves (endpoints, headers, compression, timeouts); the resource takes OTEL_SERVICE_NAME
 * and OTEL_RESOURCE_ATTRIBUTES, plus the service's version and this process's instance id.
 * With no endpoint at all (or OTEL_SDK_DISABLED=true) this is an empty layer: nothing is
 * exported or buffered. Provided outermost, it starts first and flushes last.
 */
export const Telemetry = {
  layer: Layer.unwrap(Effect.gen(function*() {
    const settings = yield* telemetrySettings
    if (!settings.traces && !settings.metrics && !settings.logs) return Layer.empty
    const protocols = {
      traces: yield* otlpProtocol("TRACES"),
      metrics: yield* otlpProtocol("METRICS"),
      logs: yield* otlpProtocol("LOGS")
    }
    const spans = yield* spanBatching
    // Loaded only when something is exported: the SDK adds tens of megabytes to the process.
    const [NodeSdk, api, traceExporter, metricExporter, logExporter, { BatchLogRecordProcessor }, {
      PeriodicExportingMetricReader
    }, { BatchSpanProcessor, RandomIdGenerator }] = yield* Effect.promise(() =>
      Promise.all([
        import("@effect/opentelemetry/NodeSdk"),
        import("@opentelemetry/api"),
        protocols.traces === "http/json"
          ? import("@opentelemetry/exporter-trace-otlp-http")
          : import("@opentelemetry/exporter-trace-otlp-proto"),
        protocols.metrics === "http/json"
          ? import("@opentelemetry/exporter-metrics-otlp-http")
          : import("@opentelemetry/exporter-metrics-otlp-proto"),
        protocols.logs === "http/json"
          ? import("@opentelemetry/exporter-logs-otlp-http")
          : import("@opentelemetry/exporter-logs-otlp-proto"),
        import("@opentelemetry/sdk-logs"),
        import("@opentelemetry/sdk-metrics"),
        import("@opentelemetry/sdk-trace")
      ])
    )
    const noopMeter = api.createNoopMeter()
    const lost: Record<string, number> = {}
    const sdk = NodeSdk.layer(() => ({
      resource: {
        serviceName: settings.serviceName,
        serviceVersion: serviceIdentity.version,
        attributes: { "service.instance.id": serviceIdentity.instanceId }
      },
      ...(settings.traces
        ? {
          spanProcessor: new BatchSpanProcessor({
            ...spans,
            exporter: new traceExporter.OTLPTraceExporter(),
            selfObsMeterProvider: lossCountingMeterProvider(noopMeter, lost, "spans")
          })
        }
        : {}),
      ...(settings.metrics
        ? {
          metricReader: new PeriodicExportingMetricReader({
            exporter: new metricExporter.OTLPMetricExporter(),
            exportIntervalMillis: settings.metricExportIntervalMs
          })
        }
        : {}),
      ...(settings.logs
        ? {
          logRecordProcessor: new BatchLogRecordProcessor({
            ...BATCH_DEFAULTS.logs,
            ...settings.logBatching,
            exporter: new logExporter.OTLPLogExporter(),
            selfObsMeterProvider: lossCountingMeterProvider(noopMeter, lost, "logs")
          })
        }
        : {}),
      shutdownTimeout: "5 seconds"
    }))
    const report = reportLosses(lost)
    const watchLosses = Layer.effectDiscard(Effect.gen(function*() {
      // At 0 from the start, so that a dashboard sees "nothing lost" rather than no series.
      for (const metric of Object.values(lostMetric)) yield* Metric.update(metric, 0)
      yield* Effect.addFinalizer(() => report)
      yield* report.pipe(Effect.repeat(Schedule.spaced(REPORT_LOSS_EVERY)), Effect.forkScoped)
    }))
    const ids = new RandomIdGenerator()
    const cheapUnsampled = settings.traces
      ? layerCheapUnsampled({ sampler: yield* otel("OTEL_TRACES_SAMPLER"), newSpanId: () => ids.generateSpanId() })
      : Layer.empty
    // Both see the SDK's layer; the cheap tracer replaces the SDK's tracer in what this provides.
    return Layer.mergeAll(cheapUnsampled, watchLosses).pipe(Layer.provideMerge(sdk))
  }))
}
