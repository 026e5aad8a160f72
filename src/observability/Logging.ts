import { Context, Effect, Formatter, Layer, Logger, Option, References, Tracer } from "effect"
import { logSettings } from "../Config.ts"

/**
 * Effect's structured entry as one flat JSON object per line, the shape log pipelines expect:
 * time, level, message, the current span's trace_id and span_id (so every line inside a span
 * meets its trace), the log annotations (update_id, …), then the cause when there is one.
 */
const formatJsonLine = Logger.make((options) => {
  const entry = Logger.formatStructured.log(options)
  const span = Context.getOption(options.fiber.context, Tracer.ParentSpan)
  return Formatter.formatJson({
    time: entry.timestamp,
    level: entry.level.toLowerCase(),
    message: entry.message,
    ...(Option.isSome(span) ? { trace_id: span.value.traceId, span_id: span.value.spanId } : {}),
    ...entry.annotations,
    ...(entry.cause === undefined ? {} : { cause: entry.cause }),
    fiber_id: entry.fiberId
  })
})

export const jsonLogger = Logger.withConsoleLog(formatJsonLine)

/**
 * The process's loggers: JSON lines (LOG_FORMAT=json, or when stdout is not a terminal) or
 * Effect's pretty lines, at LOG_LEVEL and above. OTLP log export, when on, adds its logger to
 * these (Telemetry is provided inside this layer).
 */
export const Logging = {
  layer: Layer.unwrap(Effect.map(logSettings, (settings) => {
    const format = Option.getOrElse(settings.format, () => process.stdout.isTTY ? "pretty" : "json")
    return Layer.merge(
      Logger.layer([format === "json" ? jsonLogger : Logger.consolePretty()]),
      Layer.succeed(References.MinimumLogLevel, settings.level)
    )
  }))
}
