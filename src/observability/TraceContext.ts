import { Clock, Effect, type Exit, Option, Tracer } from "effect"

/** W3C `traceparent` of the current span, or null when there is none. */
export const currentTraceparent = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.match({ onNone: () => null, onSome: (span) => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}` })
)

/** The span a stored `traceparent` names, to link to or to continue. */
export const spanFromTraceparent = (traceparent: string | null): Option.Option<Tracer.ExternalSpan> => {
  const match = traceparent === null ? null : /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent)
  return match === null
    ? Option.none()
    : Option.some(Tracer.externalSpan({ traceId: match[1]!, spanId: match[2]!, sampled: (parseInt(match[3]!, 16) & 1) === 1 }))
}

/** Adds the current span's ids to every log line of `effect`, so logs and traces meet. */
export const withTraceLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(
    Effect.option(Effect.currentSpan),
    (span) => Option.isNone(span) ? effect : Effect.annotateLogs(effect, { trace_id: span.value.traceId, span_id: span.value.spanId })
  )

/** What a run reports: its result, and the exit its span ends with. */
export interface Reported<A> {
  readonly value: A
  readonly exit: Exit.Exit<unknown, unknown>
}

/**
 * `body` in a span that ends with the exit `body` reports rather than its own: a run whose failure
 * is recorded goes on with its outcome, while its span still shows the failure and its exception.
 */
export const withReportingSpan =
  (name: string, options: Tracer.SpanOptionsNoTrace) => <A, R>(body: Effect.Effect<Reported<A>, never, R>): Effect.Effect<A, never, R> =>
    Effect.useSpan(name, options, (span) =>
      body.pipe(
        Effect.flatMap(({ exit, value }) =>
          Effect.as(Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.end(now, exit))), value)
        ),
        Effect.withParentSpan(span)
      ))
