import { Effect, Layer, Metric, Schedule } from "effect"
import { monitorEventLoopDelay, performance } from "node:perf_hooks"
import { getHeapSpaceStatistics, getHeapStatistics } from "node:v8"
import * as Metrics from "./Metrics.ts"
import { serviceIdentity } from "./ServiceIdentity.ts"

const SAMPLE_EVERY = "5 seconds"

const DELAY_STATISTICS = ["min", "max", "mean", "stddev", "p50", "p90", "p99"] as const

/**
 * The process and Node.js runtime metrics a Prometheus client's default collector would give
 * (CPU, memory, heap per space, event-loop delay and utilization, uptime), read from Node's own
 * APIs every few seconds, plus `steadfast.build_info`. No dependency: prom-client's collector
 * would need its own registry, and these few readings are all the alerts and dashboard use.
 */
export const RuntimeMetrics = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    yield* Metric.update(Metric.withAttributes(Metrics.buildInfo, { version: serviceIdentity.version }), 1)
    const delay = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const histogram = monitorEventLoopDelay({ resolution: 20 })
        histogram.enable()
        return histogram
      }),
      (histogram) => Effect.sync(() => histogram.disable())
    )
    const delayGauges = DELAY_STATISTICS.map((statistic) => [statistic, Metrics.eventLoopDelay(statistic)] as const)
    const cpu = {
      user: Metric.withAttributes(Metrics.processCpuTime, { "cpu.mode": "user" }),
      system: Metric.withAttributes(Metrics.processCpuTime, { "cpu.mode": "system" })
    }
    const heapSpaces = new Map<string, { readonly used: typeof Metrics.heapUsed; readonly limit: typeof Metrics.heapLimit }>()
    const heapSpace = (name: string) => {
      let found = heapSpaces.get(name)
      if (found === undefined) {
        const attributes = { "v8js.heap.space.name": name }
        found = { used: Metric.withAttributes(Metrics.heapUsed, attributes), limit: Metric.withAttributes(Metrics.heapLimit, attributes) }
        heapSpaces.set(name, found)
      }
      return found
    }
    let lastCpu = process.cpuUsage()
    let lastUtilization = performance.eventLoopUtilization()

    const sample = Effect.gen(function*() {
      const cpuDelta = process.cpuUsage(lastCpu)
      lastCpu = process.cpuUsage()
      yield* Metric.update(cpu.user, cpuDelta.user / 1e6)
      yield* Metric.update(cpu.system, cpuDelta.system / 1e6)
      yield* Metric.update(Metrics.processMemoryUsage, process.memoryUsage.rss())
      yield* Metric.update(Metrics.processUptime, process.uptime())

      // An empty period (no sample yet) reads as NaN or a huge min: report 0 rather than noise.
      const hasSamples = delay.count > 0
      for (const [statistic, gauge] of delayGauges) {
        const nanos = !hasSamples ? 0 : statistic === "min" ? delay.min : statistic === "max" ?
          delay.max :
          statistic === "mean" ?
          delay.mean :
          statistic === "stddev" ?
          delay.stddev :
          delay.percentile(Number(statistic.slice(1)))
        yield* Metric.update(gauge, nanos / 1e9)
      }
      delay.reset()
      const utilization = performance.eventLoopUtilization(lastUtilization)
      lastUtilization = performance.eventLoopUtilization()
      yield* Metric.update(Metrics.eventLoopUtilization, utilization.utilization)

      for (const space of getHeapSpaceStatistics()) {
        const gauges = heapSpace(space.space_name)
        yield* Metric.update(gauges.used, space.space_used_size)
        yield* Metric.update(gauges.limit, space.space_size)
      }
      yield* Metric.update(Metrics.heapSizeLimit, getHeapStatistics().heap_size_limit)
    })

    yield* sample.pipe(Effect.repeat(Schedule.spaced(SAMPLE_EVERY)), Effect.forkScoped)
  }))
}
