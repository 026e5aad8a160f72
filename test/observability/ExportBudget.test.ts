// What one update costs in exported telemetry: the running service (`node src/main.ts`) with every
// signal on, 40 echo updates from 40 chats, everything flushed by SIGTERM, then counted per update:
// spans (by name), span events, attributes, log records. The budgets are today's figures, so any
// change that adds per-update export fails here and has to say why.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { type FlatSpan, makeOtlpReceiver, spansNamed } from "../support/OtlpReceiver.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"
import { postStatus } from "../support/TestHttp.ts"

const UPDATES = 40
const FIRST_UPDATE = 7_000
const FIRST_CHAT = 7_700_000

/** Measured 8.5–8.8 spans, 34–35 attributes, 0.4–0.5 events, 0 log records per echo update; lower these as the hot path sheds spans. */
const BUDGET = { spans: 12, attributes: 48, events: 1, logRecords: 0 }

const attributeCount = (span: FlatSpan) =>
  Object.keys(span.attributes).length + span.events.reduce((sum, event) => sum + Object.keys(event.attributes).length, 0) +
  span.links.reduce((sum, link) => sum + Object.keys(link.attributes).length, 0)

describe("telemetry exported per update", () => {
  it.live("an echo update exports a bounded number of spans, attributes, events and log records", () =>
    Effect.gen(function*() {
      const receiver = yield* makeOtlpReceiver()
      const standIn = yield* BotApiRecorder
      const databaseUrl = yield* Effect.promise(() => freshDatabase("otel_budget"))
      const service = yield* spawnService(testEnv(databaseUrl, standIn.url, {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_SERVICE_NAME: "steadfast-test",
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
        SEND_RATE_PER_SECOND: "100000"
      }))
      const ids = Array.from({ length: UPDATES }, (_, i) => FIRST_UPDATE + i)
      const statuses = yield* Effect.forEach(
        ids,
        (id) => postStatus(service.baseUrl, JSON.stringify(sampleUpdate({ updateId: id, chatId: FIRST_CHAT + id, text: `echo ${id}` }))),
        { concurrency: 8 }
      )
      assert.isTrue(statuses.every((status) => status === 200))
      yield* standIn.awaitCalls(
        (calls) => calls.filter((call) => call.method === "sendMessage" && Number(call.params["chat_id"]) >= FIRST_CHAT).length >= UPDATES,
        "30 seconds"
      )
      yield* service.kill("SIGTERM")
      yield* service.exited
      const received = yield* receiver.snapshot

      // An update's spans: the traces of its webhook request and of its processing (and delivery).
      const processSpans = spansNamed(received.spans, "process inbox").filter((span) =>
        ids.includes(Number(span.attributes["telegram.update_id"]))
      )
      assert.strictEqual(processSpans.length, UPDATES)
      const traces = new Set(processSpans.flatMap((span) => [span.traceId, ...span.links.map((link) => link.traceId)]))
      const perUpdate = received.spans.filter((span) => traces.has(span.traceId))
      const byName = new Map<string, number>()
      for (const span of perUpdate) byName.set(span.name, (byName.get(span.name) ?? 0) + 1)
      const logRecords = received.logs.filter((log) => traces.has(log.traceId))
      const figures = {
        spans: perUpdate.length / UPDATES,
        attributes: perUpdate.reduce((sum, span) => sum + attributeCount(span), 0) / UPDATES,
        events: perUpdate.reduce((sum, span) => sum + span.events.length, 0) / UPDATES,
        logRecords: logRecords.length / UPDATES
      }
      const report = [
        `per update: ${JSON.stringify(figures)}`,
        ...[...byName].sort((a, b) => b[1] - a[1]).map(([name, n]) => `  ${(n / UPDATES).toFixed(2)} × ${name}`),
        `log records in update traces: ${[...new Set(logRecords.map((log) => String(log.body).slice(0, 60)))].join(" | ")}`,
        ...[...new Set(perUpdate.map((span) => span.name))].map((name) => {
          const one = perUpdate.find((span) => span.name === name)!
          return `  ${name}: ${Object.keys(one.attributes).join(",")} events=${
            one.events.map((e) => `${e.name}:${Object.keys(e.attributes).join("+")}`).join(",")
          }`
        }),
        `metric data points in the final export: ${received.metrics.reduce((sum, metric) => sum + metric.dataPoints.length, 0)}`,
        `all log records: ${received.logs.length}`
      ].join("\n")
      yield* Effect.sync(() => console.log(report))
      assert.isAtMost(figures.spans, BUDGET.spans, report)
      assert.isAtMost(figures.attributes, BUDGET.attributes, report)
      assert.isAtMost(figures.events, BUDGET.events, report)
      assert.isAtMost(figures.logRecords, BUDGET.logRecords, report)
    }).pipe(Effect.provide(BotApiRecorder.layer()), Effect.scoped), { timeout: 90_000 })
})
