import { Context, Effect, Exit, Layer, Option, Tracer } from "effect"

const noAttributes: ReadonlyMap<string, unknown> = new Map()

/**
 * A span the sampler dropped: ids for propagation and log correlation, and nothing else. The
 * OpenTelemetry span behind it (if any) is non-recording, yet Effect's OpenTelemetry span would
 * still convert every attribute, event and link, and render the Cause of a failure, for nothing.
 */
class UnsampledSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly sampled = false
  readonly attributes = noAttributes
  readonly name: string
  readonly spanId: string
  readonly traceId: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Context.Context<never>
  readonly links: ReadonlyArray<Tracer.SpanLink>
  readonly kind: Tracer.SpanKind
  status: Tracer.SpanStatus
  readonly #inner: Tracer.Span | undefined

  constructor(
    options: Parameters<Tracer.Tracer["span"]>[0],
    ids: { readonly traceId: string; readonly spanId: string },
    inner?: Tracer.Span
  ) {
    this.name = options.name
    this.parent = options.parent
    this.annotations = options.annotations
    this.links = options.links
    this.kind = options.kind
    this.traceId = ids.traceId
    this.spanId = ids.spanId
    this.status = { _tag: "Started", startTime: options.startTime }
    this.#inner = inner
  }
  attribute() {}
  event() {}
  addLinks() {}
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>) {
    if (this.status._tag === "Ended") return
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
    // Ends the non-recording span (a no-op for the exporter) without rendering the exit.
    this.#inner?.end(endTime, Exit.void)
  }
}

/**
 * `tracer` made cheap for what the sampler drops. A root span goes through `tracer` (its sampler
 * decides); when it is not sampled, the span handed to Effect ignores attributes, events and links.
 * Under a parent-based sampler (the default, and `parentbased_*`), a child of an unsampled span
 * is never sampled, so it is made without asking `tracer` at all, with a fresh span id.
 *
 * It also leaves OpenTelemetry's context API alone unless `propagateToOtelContext` is set: the
 * OpenTelemetry tracer wraps every Effect operation inside a span in `context.with`, so that
 * OpenTelemetry-instrumented libraries see the span. None runs in this process (spans, logs and
 * their parents come from Effect's own context), and that wrapping measured about as much CPU
 * as the spans themselves.
 */
export const cheapWhenUnsampled = (
  tracer: Tracer.Tracer,
  options: { readonly parentBased: boolean; readonly newSpanId: () => string; readonly propagateToOtelContext?: boolean }
): Tracer.Tracer => {
  const wrapped: Tracer.Tracer = {
    span(spanOptions) {
      const parent = spanOptions.parent
      if (options.parentBased && Option.isSome(parent) && !parent.value.sampled) {
        return new UnsampledSpan(spanOptions, { traceId: parent.value.traceId, spanId: options.newSpanId() })
      }
      const span = tracer.span(spanOptions)
      return span.sampled ? span : new UnsampledSpan(spanOptions, span, span)
    }
  }
  return options.propagateToOtelContext !== true || tracer.context === undefined ? wrapped : { ...wrapped, context: tracer.context }
}

/**
 * Replaces the tracer in context (the OpenTelemetry one, provided below this layer) with
 * `cheapWhenUnsampled` of it. OTEL_TRACES_SAMPLER unset means `parentbased_always_on`.
 */
export const layerCheapUnsampled = (options: { readonly sampler: Option.Option<string>; readonly newSpanId: () => string }) =>
  Layer.effect(
    Tracer.Tracer,
    Effect.map(Effect.tracer, (tracer) =>
      cheapWhenUnsampled(tracer, {
        parentBased: Option.match(options.sampler, { onNone: () => true, onSome: (name) => name.startsWith("parentbased_") }),
        newSpanId: options.newSpanId
      }))
  )
