import { Metric } from "effect"
import { APPLICATION_NAME } from "../Config.ts"

// Names, units and attributes follow the OpenTelemetry semantic conventions where one exists
// (database client connection pool, HTTP server, process, Node.js, V8); the service's own metrics
// use `steadfast.*`. The exporter takes an instrument's unit from its `unit` attribute, and
// Prometheus.ts derives the Prometheus names (unit suffix, `_total`) from the same attribute.

/**
 * `metric` with extra attributes, built once per distinct set: tagging on every update would
 * rebuild the attribute set and its key each time, on the hot path.
 */
export const tagged = <In, Out>(metric: Metric.Metric<In, Out>) => {
  const cache = new Map<string, Metric.Metric<In, Out>>()
  return (attributes: Record<string, string>): Metric.Metric<In, Out> => {
    const key = Object.values(attributes).join("\u0000")
    let found = cache.get(key)
    if (found === undefined) {
      found = Metric.withAttributes(metric, attributes)
      cache.set(key, found)
    }
    return found
  }
}

const pool = { "db.client.connection.pool.name": APPLICATION_NAME }
const durationBoundaries = Metric.exponentialBoundaries({ start: 0.0005, factor: 2, count: 16 })

export const connectionCount = Metric.gauge("db.client.connection.count", {
  description: "Connections currently in the state given by db.client.connection.state",
  attributes: { ...pool, unit: "{connection}" }
})
export const connectionUsed = Metric.withAttributes(connectionCount, { "db.client.connection.state": "used" })
export const connectionIdle = Metric.withAttributes(connectionCount, { "db.client.connection.state": "idle" })
export const connectionMax = Metric.gauge("db.client.connection.max", {
  description: "The maximum number of open connections allowed",
  attributes: { ...pool, unit: "{connection}" }
})
export const connectionIdleMax = Metric.gauge("db.client.connection.idle.max", {
  description: "The maximum number of idle open connections allowed",
  attributes: { ...pool, unit: "{connection}" }
})
export const connectionIdleMin = Metric.gauge("db.client.connection.idle.min", {
  description: "The minimum number of idle open connections allowed",
  attributes: { ...pool, unit: "{connection}" }
})
export const connectionPending = Metric.gauge("db.client.connection.pending_requests", {
  description: "Requests waiting for an open connection",
  attributes: { ...pool, unit: "{request}" }
})
export const connectionTimeouts = Metric.counter("db.client.connection.timeouts", {
  description: "Connection requests that timed out waiting for a connection",
  attributes: { ...pool, unit: "{timeout}" },
  incremental: true
})
export const connectionWaitTime = Metric.histogram("db.client.connection.wait_time", {
  description: "Time it took to obtain an open connection from the pool",
  boundaries: durationBoundaries,
  attributes: { ...pool, unit: "s" }
})
export const connectionCreateTime = Metric.histogram("db.client.connection.create_time", {
  description: "Time it took to create a new connection",
  boundaries: durationBoundaries,
  attributes: { ...pool, unit: "s" }
})
export const connectionUseTime = Metric.histogram("db.client.connection.use_time", {
  description: "Time between borrowing a connection and returning it to the pool",
  boundaries: durationBoundaries,
  attributes: { ...pool, unit: "s" }
})
export const httpServerDuration = Metric.histogram("http.server.request.duration", {
  description: "Duration of HTTP server requests",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
  attributes: { unit: "s" }
})

export const updatesReceived = Metric.counter("steadfast.updates.received", {
  description: "Updates stored in the inbox, by kind",
  attributes: { unit: "{update}" },
  incremental: true
})
export const updatesProcessed = Metric.counter("steadfast.updates.processed", {
  description: "Update processing attempts by outcome: done, retried, dead, skipped",
  attributes: { unit: "{update}" },
  incremental: true
})
export const processingDuration = Metric.histogram("steadfast.update.processing.duration", {
  description: "Time to process one update, handler and transaction included",
  boundaries: durationBoundaries,
  attributes: { unit: "s" }
})
export const inboxBacklog = Metric.gauge("steadfast.inbox.backlog", {
  description: "Updates waiting to be processed (pending or processing)",
  attributes: { unit: "{update}" }
})
export const inboxOldestAge = Metric.gauge("steadfast.inbox.oldest_pending.age", {
  description: "Age of the oldest unprocessed update",
  attributes: { unit: "s" }
})
export const inboxDead = Metric.gauge("steadfast.inbox.dead", {
  description: "Dead-lettered updates",
  attributes: { unit: "{update}" }
})
export const webhookShed = Metric.counter("steadfast.webhook.shed", {
  description: "POST /webhook answered 503 because the inbox held MAX_OPEN_UPDATES open updates",
  attributes: { unit: "{update}" }
})
export const outboxBacklog = Metric.gauge("steadfast.outbox.backlog", {
  description: "Bot API calls waiting to be delivered",
  attributes: { unit: "{call}" }
})
export const botApiDuration = Metric.histogram("steadfast.botapi.call.duration", {
  description: "Duration of Bot API calls, by method and outcome",
  boundaries: durationBoundaries,
  attributes: { unit: "s" }
})
export const botApiRateLimited = Metric.counter("steadfast.botapi.rate_limited", {
  description: "Bot API answers with status 429",
  attributes: { unit: "{response}" },
  incremental: true
})
export const buildInfo = Metric.gauge("steadfast.build_info", {
  description: "Always 1; the version attribute says which release runs"
})

// Runtime metrics (sampled by RuntimeMetrics.ts), by the process, Node.js and V8 conventions.
export const processCpuTime = Metric.counter("process.cpu.time", {
  description: "CPU time used by the process, by cpu.mode (user, system)",
  attributes: { unit: "s" },
  incremental: true
})
export const processMemoryUsage = Metric.gauge("process.memory.usage", {
  description: "Resident set size of the process",
  attributes: { unit: "By" }
})
export const processUptime = Metric.gauge("process.uptime", {
  description: "Time since the process started",
  attributes: { unit: "s" }
})
export const eventLoopDelay = (statistic: "min" | "max" | "mean" | "stddev" | "p50" | "p90" | "p99") =>
  Metric.gauge(`nodejs.eventloop.delay.${statistic}`, {
    description: `Event loop delay (${statistic}) over the last sampling period`,
    attributes: { unit: "s" }
  })
export const eventLoopUtilization = Metric.gauge("nodejs.eventloop.utilization", {
  description: "Share of the last sampling period the event loop was busy",
  attributes: { unit: "1" }
})
export const heapUsed = Metric.gauge("v8js.memory.heap.used", {
  description: "V8 heap memory used, by v8js.heap.space.name",
  attributes: { unit: "By" }
})
export const heapLimit = Metric.gauge("v8js.memory.heap.limit", {
  description: "V8 heap memory reserved, by v8js.heap.space.name",
  attributes: { unit: "By" }
})
export const heapSizeLimit = Metric.gauge("nodejs.heap.size_limit", {
  description: "The V8 heap's size limit (the heap cap, --max-old-space-size included)",
  attributes: { unit: "By" }
})
export const outboxCallsFailed = Metric.counter("steadfast.outbox.calls.failed", {
  description: "Bot API calls refused for good by Telegram (4xx other than 429): status failed",
  attributes: { unit: "{call}" },
  incremental: true
})
export const outboxCallsDiscarded = Metric.counter("steadfast.outbox.calls.discarded", {
  description: "Bot API calls given up after failing transiently for longer than OUTBOX_MAX_AGE: status expired",
  attributes: { unit: "{call}" },
  incremental: true
})
export const outboxWaiting = Metric.gauge("steadfast.outbox.waiting", {
  description: "Undelivered Bot API calls that failed at least once and wait for their next attempt",
  attributes: { unit: "{call}" }
})
export const outboxOldestAge = Metric.gauge("steadfast.outbox.oldest_waiting.age", {
  description: "Age of the oldest undelivered Bot API call",
  attributes: { unit: "s" }
})
