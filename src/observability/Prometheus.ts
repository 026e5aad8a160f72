import { Effect, Metric } from "effect"
import { PrometheusMetrics } from "effect/observability"

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
