import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { trace } from "@opentelemetry/api"
import { InMemorySpanExporter, type Sampler, SamplingDecision, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Layer, Option, Tracer } from "effect"
import { layerCheapUnsampled } from "../../src/observability/UnsampledSpans.ts"

class Boom extends Data.TaggedError("Boom")<{}> {}

/** A sampler that says `decision` and counts how often the SDK asked it. */
const countingSampler = (decision: SamplingDecision) => {
  const asked = { count: 0 }
  const sampler: Sampler = {
    shouldSample: () => {
      asked.count++
      return { decision }
    },
    toString: () => "counting"
  }
  return { sampler, asked }
}

/** The work under the SDK with `sampler`, and what the SDK exported (read before it shuts down and forgets). */
const traced = (sampler: Sampler) => {
  const exporter = new InMemorySpanExporter()
  return Effect.map(work, (seen) => ({ seen, exported: exporter.getFinishedSpans() })).pipe(Effect.provide(tracing(sampler, exporter)))
}

const tracing = (sampler: Sampler, exporter: InMemorySpanExporter) => {
  let next = 0
  return layerCheapUnsampled({ sampler: Option.none(), newSpanId: () => (++next).toString(16).padStart(16, "0") }).pipe(
    Layer.provideMerge(NodeSdk.layer(() => ({
      resource: { serviceName: "unsampled-test" },
      spanProcessor: new SimpleSpanProcessor(exporter),
      tracerConfig: { sampler }
    })))
  )
}

/** An update's work in miniature: a root with attributes and links, children with events, a failure. */
const work = Effect.gen(function*() {
  const seen: Array<Tracer.Span> = []
  const otelActive: Array<unknown> = []
  const capture = Effect.flatMap(Effect.currentSpan, (span) =>
    Effect.sync(() => {
      seen.push(span)
      otelActive.push(trace.getActiveSpan())
    }))
  yield* Effect.gen(function*() {
    yield* capture
    yield* Effect.annotateCurrentSpan({ "telegram.update_id": 42 })
    yield* Effect.withSpan(capture, "child", { attributes: { "db.query.text": "SELECT 1" } })
    yield* Effect.withSpan(Effect.fail(new Boom()), "failing").pipe(Effect.ignore)
    yield* Effect.withSpan(Effect.withSpan(capture, "grandchild"), "child2")
  }).pipe(Effect.withSpan("process inbox", { root: true, kind: "consumer", attributes: { "steadfast.attempt": 1 } }))
  // Nothing here reads OpenTelemetry's own context: Effect's spans are never made active there.
  assert.deepStrictEqual(otelActive, seen.map(() => undefined))
  return seen
})

describe("spans the sampler drops", () => {
  it.effect("an unsampled root keeps no attributes, and its children never reach the SDK's sampler", () =>
    Effect.gen(function*() {
      const { sampler, asked } = countingSampler(SamplingDecision.NOT_RECORD)
      const { seen, exported } = yield* traced(sampler)
      assert.strictEqual(asked.count, 1, "only the root asks the sampler")
      assert.strictEqual(exported.length, 0)
      assert.strictEqual(seen.length, 3)
      const [root, ...children] = seen
      for (const span of seen) {
        assert.isFalse(span.sampled)
        assert.strictEqual(span.attributes.size, 0)
        assert.strictEqual(span.traceId, root!.traceId)
        assert.match(span.spanId, /^[0-9a-f]{16}$/)
      }
      assert.strictEqual(new Set(seen.map((span) => span.spanId)).size, 3)
      // Parents are kept, so log lines and stored traceparents still name the right ids.
      assert.strictEqual(Option.getOrUndefined(children[0]!.parent)?.spanId, root!.spanId)
    }))

  it.effect("a sampled root and its children are exported whole: attributes, kinds, the failure's event", () =>
    Effect.gen(function*() {
      const { sampler, asked } = countingSampler(SamplingDecision.RECORD_AND_SAMPLED)
      const { seen, exported: spans } = yield* traced(sampler)
      assert.strictEqual(asked.count, 5)
      assert.isTrue(seen.every((span) => span.sampled))
      assert.deepStrictEqual(spans.map((span) => span.name).sort(), ["child", "child2", "failing", "grandchild", "process inbox"])
      const root = spans.find((span) => span.name === "process inbox")!
      assert.strictEqual(root.attributes["telegram.update_id"], 42)
      assert.strictEqual(root.attributes["steadfast.attempt"], 1)
      assert.strictEqual(spans.find((span) => span.name === "child")!.attributes["db.query.text"], "SELECT 1")
      assert.isTrue(spans.find((span) => span.name === "failing")!.events.some((event) => event.name === "exception"))
    }))
})
