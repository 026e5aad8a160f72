import { Effect, Layer } from "effect"
import { telemetrySettings } from "../Config.ts"
import { serviceIdentity } from "./ServiceIdentity.ts"

/**
 * Traces, metrics and logs over OTLP/HTTP. The OpenTelemetry exporters read the standard
 * variables themselves (OTEL_EXPORTER_OTLP_ENDPOINT, per-signal endpoints, OTEL_EXPORTER_OTLP_HEADERS,
 * timeouts); the resource takes OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, plus the
 * service's version and this process's instance id. With no endpoint at all (or
 * OTEL_SDK_DISABLED=true) this is an empty layer: nothing is exported or buffered.
 * Provided outermost, it starts first and flushes last, after every other layer has closed.
 */
export const Telemetry = {
  layer: Layer.unwrap(Effect.gen(function*() {
    const settings = yield* telemetrySettings
    if (!settings.traces && !settings.metrics && !settings.logs) return Layer.empty
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
      resource: {
        serviceName: settings.serviceName,
        serviceVersion: serviceIdentity.version,
        attributes: { "service.instance.id": serviceIdentity.instanceId }
      },
      ...(settings.traces ? { spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter()) } : {}),
      ...(settings.metrics
        ? {
          metricReader: new PeriodicExportingMetricReader({
            exporter: new OTLPMetricExporter(),
            exportIntervalMillis: settings.metricExportIntervalMs
          })
        }
        : {}),
      ...(settings.logs
        ? { logRecordProcessor: new BatchLogRecordProcessor({ ...settings.logBatching, exporter: new OTLPLogExporter() }) }
        : {}),
      shutdownTimeout: "5 seconds"
    }))
  }))
}
