// OTLP/protobuf request bodies decoded into the OTLP/JSON shape (lowerCamelCase names, hex
// trace and span ids, 64-bit integers as strings), so one set of flatteners reads both
// encodings. Only the messages of the three Export*ServiceRequests are described (field numbers
// from opentelemetry-proto v1); unknown fields are skipped, as any protobuf reader does.

type Scalar = "string" | "bool" | "enum" | "int64" | "sint32" | "fixed64" | "sfixed64" | "fixed32" | "double" | "id" | "bytes"
interface Field {
  readonly name: string
  readonly type: Scalar | (() => Message)
  readonly repeated?: boolean
}
type Message = Readonly<Record<number, Field>>

const f = (name: string, type: Field["type"], repeated = false): Field => ({ name, type, repeated })

const AnyValue: Message = {
  1: f("stringValue", "string"),
  2: f("boolValue", "bool"),
  3: f("intValue", "int64"),
  4: f("doubleValue", "double"),
  5: f("arrayValue", () => ArrayValue),
  6: f("kvlistValue", () => KeyValueList),
  7: f("bytesValue", "bytes")
}
const KeyValue: Message = { 1: f("key", "string"), 2: f("value", () => AnyValue) }
const ArrayValue: Message = { 1: f("values", () => AnyValue, true) }
const KeyValueList: Message = { 1: f("values", () => KeyValue, true) }
const attributes = (n: number) => ({ [n]: f("attributes", () => KeyValue, true) })
const Resource: Message = { ...attributes(1), 2: f("droppedAttributesCount", "enum") }
const Scope: Message = { 1: f("name", "string"), 2: f("version", "string"), ...attributes(3) }

const Event: Message = { 1: f("timeUnixNano", "fixed64"), 2: f("name", "string"), ...attributes(3) }
const Link: Message = {
  1: f("traceId", "id"),
  2: f("spanId", "id"),
  3: f("traceState", "string"),
  ...attributes(4),
  6: f("flags", "fixed32")
}
const Status: Message = { 2: f("message", "string"), 3: f("code", "enum") }
const Span: Message = {
  1: f("traceId", "id"),
  2: f("spanId", "id"),
  3: f("traceState", "string"),
  4: f("parentSpanId", "id"),
  5: f("name", "string"),
  6: f("kind", "enum"),
  7: f("startTimeUnixNano", "fixed64"),
  8: f("endTimeUnixNano", "fixed64"),
  ...attributes(9),
  11: f("events", () => Event, true),
  13: f("links", () => Link, true),
  15: f("status", () => Status),
  16: f("flags", "fixed32")
}
const TracesRequest: Message = {
  1: f("resourceSpans", () => ({
    1: f("resource", () => Resource),
    2: f("scopeSpans", () => ({ 1: f("scope", () => Scope), 2: f("spans", () => Span, true) }), true)
  }), true)
}

const NumberDataPoint: Message = {
  ...attributes(7),
  2: f("startTimeUnixNano", "fixed64"),
  3: f("timeUnixNano", "fixed64"),
  4: f("asDouble", "double"),
  6: f("asInt", "sfixed64")
}
const HistogramDataPoint: Message = {
  ...attributes(9),
  2: f("startTimeUnixNano", "fixed64"),
  3: f("timeUnixNano", "fixed64"),
  4: f("count", "fixed64"),
  5: f("sum", "double"),
  6: f("bucketCounts", "fixed64", true),
  7: f("explicitBounds", "double", true),
  11: f("min", "double"),
  12: f("max", "double")
}
const ExponentialHistogramDataPoint: Message = {
  ...attributes(1),
  2: f("startTimeUnixNano", "fixed64"),
  3: f("timeUnixNano", "fixed64"),
  4: f("count", "fixed64"),
  5: f("sum", "double"),
  6: f("scale", "sint32"),
  7: f("zeroCount", "fixed64")
}
const points = (point: Message): Message => ({ 1: f("dataPoints", () => point, true), 2: f("aggregationTemporality", "enum") })
const Metric: Message = {
  1: f("name", "string"),
  2: f("description", "string"),
  3: f("unit", "string"),
  5: f("gauge", () => points(NumberDataPoint)),
  7: f("sum", () => ({ ...points(NumberDataPoint), 3: f("isMonotonic", "bool") })),
  9: f("histogram", () => points(HistogramDataPoint)),
  10: f("exponentialHistogram", () => points(ExponentialHistogramDataPoint))
}
const MetricsRequest: Message = {
  1: f("resourceMetrics", () => ({
    1: f("resource", () => Resource),
    2: f("scopeMetrics", () => ({ 1: f("scope", () => Scope), 2: f("metrics", () => Metric, true) }), true)
  }), true)
}

const LogRecord: Message = {
  1: f("timeUnixNano", "fixed64"),
  11: f("observedTimeUnixNano", "fixed64"),
  2: f("severityNumber", "enum"),
  3: f("severityText", "string"),
  5: f("body", () => AnyValue),
  ...attributes(6),
  8: f("flags", "fixed32"),
  9: f("traceId", "id"),
  10: f("spanId", "id"),
  12: f("eventName", "string")
}
const LogsRequest: Message = {
  1: f("resourceLogs", () => ({
    1: f("resource", () => Resource),
    2: f("scopeLogs", () => ({ 1: f("scope", () => Scope), 2: f("logRecords", () => LogRecord, true) }), true)
  }), true)
}

export const requestMessages = { traces: TracesRequest, metrics: MetricsRequest, logs: LogsRequest } as const

class Reader {
  pos = 0
  readonly bytes: Uint8Array
  readonly view: DataView
  constructor(bytes: Uint8Array) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  atEnd(end: number) {
    return this.pos >= end
  }
  varint(): bigint {
    let result = 0n
    let shift = 0n
    for (;;) {
      if (this.pos >= this.bytes.length) throw new Error("protobuf: truncated varint")
      const byte = this.bytes[this.pos++]!
      result |= BigInt(byte & 0x7f) << shift
      if ((byte & 0x80) === 0) return result
      shift += 7n
    }
  }
  take(length: number): Uint8Array {
    if (this.pos + length > this.bytes.length) throw new Error("protobuf: truncated field")
    const slice = this.bytes.subarray(this.pos, this.pos + length)
    this.pos += length
    return slice
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

const scalar = (type: Scalar, wire: number, reader: Reader): unknown => {
  switch (type) {
    case "string":
      return utf8.decode(reader.take(Number(reader.varint())))
    case "id":
      return Buffer.from(reader.take(Number(reader.varint()))).toString("hex")
    case "bytes":
      return Buffer.from(reader.take(Number(reader.varint()))).toString("base64")
    case "bool":
      return reader.varint() !== 0n
    case "enum":
      return Number(BigInt.asIntN(32, reader.varint()))
    case "int64":
      return BigInt.asIntN(64, reader.varint()).toString()
    case "sint32": {
      const n = reader.varint()
      return Number((n >> 1n) ^ -(n & 1n))
    }
    case "fixed64":
      return reader.view.getBigUint64(reader.take(8).byteOffset - reader.bytes.byteOffset, true).toString()
    case "sfixed64":
      return reader.view.getBigInt64(reader.take(8).byteOffset - reader.bytes.byteOffset, true).toString()
    case "double":
      return reader.view.getFloat64(reader.take(8).byteOffset - reader.bytes.byteOffset, true)
    case "fixed32":
      return reader.view.getUint32(reader.take(4).byteOffset - reader.bytes.byteOffset, true)
  }
  throw new Error(`protobuf: wire type ${wire} for ${type}`)
}

const skip = (wire: number, reader: Reader) => {
  if (wire === 0) reader.varint()
  else if (wire === 1) reader.take(8)
  else if (wire === 2) reader.take(Number(reader.varint()))
  else if (wire === 5) reader.take(4)
  else throw new Error(`protobuf: unsupported wire type ${wire}`)
}

const decodeMessage = (message: Message, reader: Reader, end: number): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  while (!reader.atEnd(end)) {
    const tag = Number(reader.varint())
    const number = tag >>> 3
    const wire = tag & 7
    const field = message[number]
    if (field === undefined) {
      skip(wire, reader)
      continue
    }
    const values: Array<unknown> = []
    if (typeof field.type === "function") {
      const length = Number(reader.varint())
      values.push(decodeMessage(field.type(), reader, reader.pos + length))
    } else if (field.repeated === true && wire === 2 && field.type !== "string" && field.type !== "bytes" && field.type !== "id") {
      // Packed repeated scalars: one length-delimited run of values.
      const packedEnd = reader.pos + Number(reader.varint())
      while (reader.pos < packedEnd) values.push(scalar(field.type, wire, reader))
    } else {
      values.push(scalar(field.type, wire, reader))
    }
    const current: unknown = out[field.name]
    out[field.name] = field.repeated !== true ? values[0] : Array.isArray(current) ? [...current, ...values] : values
  }
  return out
}

/** An Export{Traces,Metrics,Logs}ServiceRequest body as its OTLP/JSON object; throws on malformed input. */
export const decodeOtlpProtobuf = (signal: keyof typeof requestMessages, bytes: Uint8Array): Record<string, unknown> =>
  decodeMessage(requestMessages[signal], new Reader(bytes), bytes.length)
