// A local OTLP/HTTP receiver: what an OpenTelemetry Collector would see from the service.
// It accepts both OTLP/HTTP encodings, protobuf and JSON (gzip-compressed or not), on /v1/traces,
// /v1/metrics and /v1/logs, keeps every request with its raw body, decodes either into the JSON
// shape, and flattens spans, metric points and log records into plain records for assertions.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { gunzip } from "node:zlib"
import { Duration, Effect, FiberSet, Option, Predicate, Schema, Stream, SubscriptionRef } from "effect"
import { decodeOtlpProtobuf } from "./OtlpProtobuf.ts"

export type Signal = "traces" | "metrics" | "logs"

/**
 * One POST as it arrived. `raw` is the decompressed body as text (JSON as UTF-8; protobuf one
 * character per byte, so any ASCII string in it is found as is); `body` is the request in the
 * OTLP/JSON shape, whichever encoding it came in, or null when it could not be decoded.
 */
export interface ReceivedRequest {
  readonly signal: Signal | undefined
  readonly path: string
  readonly contentType: string
  readonly contentEncoding: string | undefined
  readonly raw: string
  readonly body: unknown
}

export type AttributeValue =
  | string
  | number
  | boolean
  | null
  | ReadonlyArray<AttributeValue>
  | { readonly [key: string]: AttributeValue }

export type Attributes = Readonly<Record<string, AttributeValue>>

export interface FlatSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  /** Empty string for a root span. */
  readonly parentSpanId: string
  /** OTLP numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number
  readonly attributes: Attributes
  readonly links: ReadonlyArray<{ readonly traceId: string; readonly spanId: string; readonly attributes: Attributes }>
  /** 0 unset, 1 ok, 2 error. */
  readonly status: { readonly code: number; readonly message: string }
  readonly events: ReadonlyArray<{ readonly name: string; readonly attributes: Attributes }>
  readonly resource: Attributes
}

export const SpanKind = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const

export interface FlatDataPoint {
  readonly attributes: Attributes
  /** Sum and gauge points. */
  readonly value: number | undefined
  /** Histogram points. */
  readonly count: number | undefined
  readonly sum: number | undefined
  readonly timeUnixNano: string
}

export interface FlatMetric {
  readonly name: string
  readonly unit: string
  readonly type: "sum" | "gauge" | "histogram" | "exponentialHistogram" | "unknown"
  readonly dataPoints: ReadonlyArray<FlatDataPoint>
  readonly resource: Attributes
}

export interface FlatLogRecord {
  readonly body: AttributeValue
  readonly severityText: string
  readonly attributes: Attributes
  readonly traceId: string
  readonly spanId: string
  readonly resource: Attributes
}

export class ReceiverTimeout extends Schema.TaggedError<ReceiverTimeout>()("ReceiverTimeout", {
  timeout: Schema.String,
  seen: Schema.String
}) {
  override get message(): string {
    return `OTLP receiver: condition not met within ${this.timeout}; received ${this.seen}`
  }
}

export class ReceiverListenError extends Schema.TaggedError<ReceiverListenError>()("ReceiverListenError", {
  reason: Schema.String
}) {}

// --- OTLP/JSON shapes (only the fields the flatteners read; unknown keys are dropped) ---

const KeyValue = Schema.Struct({ key: Schema.String, value: Schema.optional(Schema.Unknown) })
const KeyValues = Schema.optional(Schema.Array(KeyValue))
const Resource = Schema.optional(Schema.Struct({ attributes: KeyValues }))
const Id = Schema.optional(Schema.String)
// int64 values are JSON numbers from the JS exporter; the OTLP spec also allows strings.
const Int64 = Schema.optional(Schema.Union([Schema.Number, Schema.String]))

const TracesRequest = Schema.Struct({
  resourceSpans: Schema.optional(Schema.Array(Schema.Struct({
    resource: Resource,
    scopeSpans: Schema.optional(Schema.Array(Schema.Struct({
      spans: Schema.optional(Schema.Array(Schema.Struct({
        name: Schema.String,
        traceId: Schema.String,
        spanId: Schema.String,
        parentSpanId: Id,
        kind: Schema.optional(Schema.Number),
        attributes: KeyValues,
        links: Schema.optional(Schema.Array(Schema.Struct({ traceId: Schema.String, spanId: Schema.String, attributes: KeyValues }))),
        status: Schema.optional(Schema.Struct({ code: Schema.optional(Schema.Number), message: Schema.optional(Schema.String) })),
        events: Schema.optional(Schema.Array(Schema.Struct({ name: Schema.String, attributes: KeyValues })))
      })))
    })))
  })))
})

const NumberPoint = Schema.Struct({
  attributes: KeyValues,
  asInt: Int64,
  asDouble: Schema.optional(Schema.Number),
  count: Int64,
  sum: Schema.optional(Schema.Number),
  timeUnixNano: Schema.optional(Schema.Union([Schema.String, Schema.Number]))
})
const Points = Schema.optional(Schema.Struct({ dataPoints: Schema.optional(Schema.Array(NumberPoint)) }))

const MetricsRequest = Schema.Struct({
  resourceMetrics: Schema.optional(Schema.Array(Schema.Struct({
    resource: Resource,
    scopeMetrics: Schema.optional(Schema.Array(Schema.Struct({
      metrics: Schema.optional(Schema.Array(Schema.Struct({
        name: Schema.String,
        unit: Schema.optional(Schema.String),
        sum: Points,
        gauge: Points,
        histogram: Points,
        exponentialHistogram: Points
      })))
    })))
  })))
})

const LogsRequest = Schema.Struct({
  resourceLogs: Schema.optional(Schema.Array(Schema.Struct({
    resource: Resource,
    scopeLogs: Schema.optional(Schema.Array(Schema.Struct({
      logRecords: Schema.optional(Schema.Array(Schema.Struct({
        body: Schema.optional(Schema.Unknown),
        severityText: Schema.optional(Schema.String),
        attributes: KeyValues,
        traceId: Id,
        spanId: Id
      })))
    })))
  })))
})

const decodeTraces = Schema.decodeUnknownOption(TracesRequest)
const decodeMetrics = Schema.decodeUnknownOption(MetricsRequest)
const decodeLogs = Schema.decodeUnknownOption(LogsRequest)
const decodeJson = Schema.decodeUnknownOption(Schema.fromJsonString(Schema.Unknown))
const decodeProtobuf = (signal: Signal, bytes: Uint8Array): Option.Option<unknown> =>
  Option.liftThrowable(decodeOtlpProtobuf)(signal, bytes)

const toNumber = (value: number | string | undefined): number | undefined =>
  value === undefined ? undefined : typeof value === "number" ? value : Number(value)

/** An OTLP `AnyValue` as a plain JSON value. */
export const anyValue = (value: unknown): AttributeValue => {
  if (!Predicate.isObject(value)) return null
  if ("stringValue" in value && typeof value.stringValue === "string") return value.stringValue
  if ("boolValue" in value && typeof value.boolValue === "boolean") return value.boolValue
  if ("intValue" in value && (typeof value.intValue === "number" || typeof value.intValue === "string")) return Number(value.intValue)
  if ("doubleValue" in value && typeof value.doubleValue === "number") return value.doubleValue
  if ("bytesValue" in value && typeof value.bytesValue === "string") return value.bytesValue
  if (
    "arrayValue" in value && Predicate.isObject(value.arrayValue) && "values" in value.arrayValue && Array.isArray(value.arrayValue.values)
  ) {
    return value.arrayValue.values.map(anyValue)
  }
  if (
    "kvlistValue" in value && Predicate.isObject(value.kvlistValue) && "values" in value.kvlistValue &&
    Array.isArray(value.kvlistValue.values)
  ) {
    const entries: Array<[string, AttributeValue]> = []
    for (const entry of value.kvlistValue.values) {
      if (Predicate.isObject(entry) && "key" in entry && typeof entry.key === "string") {
        entries.push([entry.key, "value" in entry ? anyValue(entry.value) : null])
      }
    }
    return Object.fromEntries(entries)
  }
  return null
}

const attributesOf = (list: ReadonlyArray<{ readonly key: string; readonly value?: unknown }> | undefined): Attributes =>
  Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValue(kv.value)]))

export const flattenSpans = (requests: ReadonlyArray<ReceivedRequest>): ReadonlyArray<FlatSpan> =>
  requests.filter((r) => r.signal === "traces").flatMap((request) =>
    Option.match(decodeTraces(request.body), {
      onNone: () => [],
      onSome: (decoded) =>
        (decoded.resourceSpans ?? []).flatMap((rs) => {
          const resource = attributesOf(rs.resource?.attributes)
          return (rs.scopeSpans ?? []).flatMap((ss) =>
            (ss.spans ?? []).map((span): FlatSpan => ({
              name: span.name,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              kind: span.kind ?? 0,
              attributes: attributesOf(span.attributes),
              links: (span.links ?? []).map((link) => ({
                traceId: link.traceId,
                spanId: link.spanId,
                attributes: attributesOf(link.attributes)
              })),
              status: { code: span.status?.code ?? 0, message: span.status?.message ?? "" },
              events: (span.events ?? []).map((event) => ({ name: event.name, attributes: attributesOf(event.attributes) })),
              resource
            }))
          )
        })
    })
  )

export const flattenMetrics = (requests: ReadonlyArray<ReceivedRequest>): ReadonlyArray<FlatMetric> =>
  requests.filter((r) => r.signal === "metrics").flatMap((request) =>
    Option.match(decodeMetrics(request.body), {
      onNone: () => [],
      onSome: (decoded) =>
        (decoded.resourceMetrics ?? []).flatMap((rm) => {
          const resource = attributesOf(rm.resource?.attributes)
          return (rm.scopeMetrics ?? []).flatMap((sm) =>
            (sm.metrics ?? []).map((metric): FlatMetric => {
              const type = metric.sum !== undefined ?
                "sum"
                : metric.gauge !== undefined ?
                "gauge"
                : metric.histogram !== undefined ?
                "histogram"
                : metric.exponentialHistogram !== undefined ?
                "exponentialHistogram"
                : "unknown"
              const points = metric.sum ?? metric.gauge ?? metric.histogram ?? metric.exponentialHistogram
              return {
                name: metric.name,
                unit: metric.unit ?? "",
                type,
                resource,
                dataPoints: (points?.dataPoints ?? []).map((point) => ({
                  attributes: attributesOf(point.attributes),
                  value: point.asDouble ?? toNumber(point.asInt),
                  count: toNumber(point.count),
                  sum: point.sum,
                  timeUnixNano: String(point.timeUnixNano ?? "")
                }))
              }
            })
          )
        })
    })
  )

export const flattenLogs = (requests: ReadonlyArray<ReceivedRequest>): ReadonlyArray<FlatLogRecord> =>
  requests.filter((r) => r.signal === "logs").flatMap((request) =>
    Option.match(decodeLogs(request.body), {
      onNone: () => [],
      onSome: (decoded) =>
        (decoded.resourceLogs ?? []).flatMap((rl) => {
          const resource = attributesOf(rl.resource?.attributes)
          return (rl.scopeLogs ?? []).flatMap((sl) =>
            (sl.logRecords ?? []).map((record): FlatLogRecord => ({
              body: anyValue(record.body),
              severityText: record.severityText ?? "",
              attributes: attributesOf(record.attributes),
              traceId: record.traceId ?? "",
              spanId: record.spanId ?? "",
              resource
            }))
          )
        })
    })
  )

/** What has arrived so far, flattened once per check. */
export interface Received {
  readonly requests: ReadonlyArray<ReceivedRequest>
  readonly spans: ReadonlyArray<FlatSpan>
  readonly metrics: ReadonlyArray<FlatMetric>
  readonly logs: ReadonlyArray<FlatLogRecord>
}

export const received = (requests: ReadonlyArray<ReceivedRequest>): Received => ({
  requests,
  spans: flattenSpans(requests),
  metrics: flattenMetrics(requests),
  logs: flattenLogs(requests)
})

export interface OtlpReceiver {
  /** `http://127.0.0.1:PORT`, the value for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string
  readonly requests: Effect.Effect<ReadonlyArray<ReceivedRequest>>
  readonly snapshot: Effect.Effect<Received>
  /**
   * Waits until `check` returns a value other than undefined, re-checking on every request
   * that arrives, and returns that value.
   */
  readonly waitFor: <A>(check: (received: Received) => A | undefined, timeout?: Duration.Input) => Effect.Effect<A, ReceiverTimeout>
  readonly clear: Effect.Effect<void>
}

const signalOf = (path: string): Signal | undefined =>
  path === "/v1/traces" ? "traces" : path === "/v1/metrics" ? "metrics" : path === "/v1/logs" ? "logs" : undefined

const readBody = (req: IncomingMessage) =>
  Effect.callback<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    const onData = (chunk: Buffer) => void chunks.push(chunk)
    const onEnd = () => resume(Effect.succeed(Buffer.concat(chunks)))
    req.on("data", onData)
    req.once("end", onEnd)
    return Effect.sync(() => {
      req.off("data", onData)
      req.off("end", onEnd)
    })
  })

const gunzipped = (bytes: Buffer) =>
  Effect.callback<Buffer, Error>((resume) => {
    gunzip(bytes, (error, result) => resume(error === null ? Effect.succeed(result) : Effect.fail(error)))
  })

const summarize = (requests: ReadonlyArray<ReceivedRequest>): string => {
  const count = (signal: Signal) => requests.filter((r) => r.signal === signal).length
  return `${requests.length} request(s): ${count("traces")} traces, ${count("metrics")} metrics, ${count("logs")} logs`
}

/** Starts the receiver on 127.0.0.1 (an ephemeral port unless `port` is given); it stops when the scope closes. */
export const makeOtlpReceiver = (options: { readonly port?: number } = {}) =>
  Effect.gen(function*() {
    const state = yield* SubscriptionRef.make<ReadonlyArray<ReceivedRequest>>([])
    const run = yield* FiberSet.makeRuntime<never, void, never>()

    const reply = (res: ServerResponse, status: number, body: string, contentType = "application/json") => {
      res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
      res.end(body)
    }

    const handle = Effect.fnUntraced(function*(req: IncomingMessage, res: ServerResponse) {
      const path = new URL(req.url ?? "/", "http://receiver").pathname
      const contentEncoding = req.headers["content-encoding"]
      const bytes = yield* readBody(req)
      const decompressed = contentEncoding === "gzip" ? yield* gunzipped(bytes) : bytes
      const contentType = req.headers["content-type"] ?? ""
      const signal = signalOf(path)
      const protobuf = contentType.startsWith("application/x-protobuf")
      const text = decompressed.toString(protobuf ? "latin1" : "utf8")
      const body = protobuf
        ? signal === undefined ? null : Option.getOrNull(decodeProtobuf(signal, decompressed))
        : Option.getOrNull(decodeJson(text))
      yield* SubscriptionRef.update(state, (all) => [...all, { signal, path, contentType, contentEncoding, raw: text, body }])
      if (req.method !== "POST" || signal === undefined) return reply(res, 404, "{}")
      // An empty response message is a full success (no partialSuccess), in either encoding.
      if (protobuf) return reply(res, body === null ? 400 : 200, "", "application/x-protobuf")
      if (!contentType.startsWith("application/json")) return reply(res, 415, "{}")
      reply(res, 200, "{}")
    })

    const server = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>, ReceiverListenError>((resume) => {
        const server = createServer({ keepAliveTimeout: 500 }, (req, res) => {
          run(handle(req, res).pipe(Effect.catchCause(() => Effect.sync(() => reply(res, 400, "{}")))))
        })
        const onError = (error: Error) => resume(Effect.fail(new ReceiverListenError({ reason: error.message })))
        server.once("error", onError)
        server.listen(options.port ?? 0, "127.0.0.1", () => {
          server.off("error", onError)
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    const address = server.address()
    const url = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : options.port}`

    const waitFor = <A>(check: (received: Received) => A | undefined, timeout: Duration.Input = "20 seconds") =>
      SubscriptionRef.changes(state).pipe(
        Stream.map((requests) => check(received(requests))),
        Stream.filter((value): value is A => value !== undefined),
        Stream.runHead,
        // changes() never ends, so runHead returns only once a check succeeded.
        Effect.flatMap(Option.match({
          onNone: () => Effect.die(new Error("OTLP receiver: change stream ended")),
          onSome: Effect.succeed
        })),
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () =>
            Effect.flatMap(SubscriptionRef.get(state), (requests) =>
              Effect.fail(new ReceiverTimeout({ timeout: Duration.format(Duration.fromInputUnsafe(timeout)), seen: summarize(requests) })))
        })
      )

    return {
      url,
      requests: SubscriptionRef.get(state),
      snapshot: Effect.map(SubscriptionRef.get(state), received),
      waitFor,
      clear: SubscriptionRef.set(state, [])
    } satisfies OtlpReceiver
  })

// --- helpers over flattened data ---

export const spansNamed = (spans: ReadonlyArray<FlatSpan>, name: string) => spans.filter((span) => span.name === name)

/** Every span below `root` in its trace (children, grandchildren, ...). */
export const descendantsOf = (spans: ReadonlyArray<FlatSpan>, root: FlatSpan): ReadonlyArray<FlatSpan> => {
  const inTrace = spans.filter((span) => span.traceId === root.traceId)
  const result: Array<FlatSpan> = []
  const frontier = [root.spanId]
  while (frontier.length > 0) {
    const parent = frontier.pop()
    for (const span of inTrace) {
      if (span.parentSpanId === parent && !result.includes(span)) {
        result.push(span)
        frontier.push(span.spanId)
      }
    }
  }
  return result
}

export const childrenOf = (spans: ReadonlyArray<FlatSpan>, parent: FlatSpan): ReadonlyArray<FlatSpan> =>
  spans.filter((span) => span.traceId === parent.traceId && span.parentSpanId === parent.spanId)

/** An indented tree of the trace `root` belongs to, below `root`: one line per span. */
export const renderTree = (spans: ReadonlyArray<FlatSpan>, root: FlatSpan, indent = ""): string =>
  [
    `${indent}${root.name} [${Object.entries(SpanKind).find(([, kind]) => kind === root.kind)?.[0] ?? root.kind}]`,
    ...childrenOf(spans, root).map((child) => renderTree(spans, child, `${indent}  `))
  ].join("\n")

export const metricsNamed = (metrics: ReadonlyArray<FlatMetric>, name: string) => metrics.filter((metric) => metric.name === name)

/** Data points of `name` whose attributes include `match`, across every export so far (oldest first). */
export const pointsOf = (metrics: ReadonlyArray<FlatMetric>, name: string, match: Attributes = {}): ReadonlyArray<FlatDataPoint> =>
  metricsNamed(metrics, name).flatMap((metric) =>
    metric.dataPoints.filter((point) => Object.entries(match).every(([key, value]) => point.attributes[key] === value))
  )
