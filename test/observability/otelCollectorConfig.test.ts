import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import YAML from "yaml"

// Static checks of otel-collector.yaml. They need no collector binary. They catch the
// mistakes the collector only reports at start-up (undefined or unused components),
// a wrong processor order, and ports that drift away from compose.yaml and the runbook (docs/operations.md).

const root = fileURLToPath(new URL("../../", import.meta.url))
const configPath = `${root}otel-collector.yaml`
const composePath = `${root}compose.yaml`
const runbookPath = `${root}docs/operations.md`

type Dict = Record<string, unknown>

const isDict = (value: unknown): value is Dict => typeof value === "object" && value !== null && !Array.isArray(value)

const dict = (value: unknown, where: string): Dict => {
  if (!isDict(value)) throw new Error(`${where} must be a mapping`)
  return value
}

const strings = (value: unknown, where: string): ReadonlyArray<string> => {
  if (value === undefined) return []
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw new Error(`${where} must be a list of strings`)
  }
  return value
}

// A component id is `type` or `type/name`; the type decides what the collector builds.
const componentType = (id: string) => id.split("/")[0] ?? id

const loadConfig = () => dict(YAML.parse(fs.readFileSync(configPath, "utf8")), "otel-collector.yaml")

const pipelinesOf = (config: Dict) => {
  const service = dict(config["service"], "service")
  const pipelines = dict(service["pipelines"], "service.pipelines")
  return Object.entries(pipelines).map(([id, value]) => {
    const pipeline = dict(value, `service.pipelines.${id}`)
    return {
      id,
      receivers: strings(pipeline["receivers"], `${id}.receivers`),
      processors: strings(pipeline["processors"], `${id}.processors`),
      exporters: strings(pipeline["exporters"], `${id}.exporters`)
    }
  })
}

const portOf = (endpoint: string): number | undefined => {
  const match = /:(\d+)(?:\/.*)?$/.exec(endpoint)
  return match?.[1] === undefined ? undefined : Number(match[1])
}

// Every `endpoint: host:port` anywhere in the config: receivers, exporters, extensions.
const endpointPorts = (value: unknown, found = new Set<number>()): Set<number> => {
  if (Array.isArray(value)) {
    for (const item of value) endpointPorts(item, found)
  } else if (isDict(value)) {
    for (const [key, item] of Object.entries(value)) {
      if (key === "endpoint" && typeof item === "string") {
        const port = portOf(item)
        if (port !== undefined) found.add(port)
      } else {
        endpointPorts(item, found)
      }
    }
  }
  return found
}

// Host side of each `ports:` entry in compose.yaml, e.g. "16686:16686" or "8080:8080/tcp".
const composePublishedPorts = (): Set<number> => {
  const found = new Set<number>()
  if (!fs.existsSync(composePath)) return found
  const compose = dict(YAML.parse(fs.readFileSync(composePath, "utf8")), "compose.yaml")
  for (const service of Object.values(dict(compose["services"], "services"))) {
    const ports = dict(service, "service")["ports"]
    if (!Array.isArray(ports)) continue
    for (const entry of ports) {
      const published = isDict(entry) ? String(entry["published"] ?? entry["target"]) : String(entry)
      const parts = published.replace(/\/(tcp|udp)$/, "").split(":")
      const host = Number(parts.length > 1 ? parts[parts.length - 2] : parts[0])
      if (Number.isInteger(host)) found.add(host)
    }
  }
  return found
}

const SECTIONS = ["receivers", "processors", "exporters"] as const

describe("otel-collector.yaml", () => {
  it("has traces, metrics and logs pipelines fed by the OTLP receiver", () => {
    const pipelines = pipelinesOf(loadConfig())
    assert.deepStrictEqual(pipelines.map((p) => componentType(p.id)).sort(), ["logs", "metrics", "traces"])
    for (const pipeline of pipelines) {
      assert.deepStrictEqual(pipeline.receivers, ["otlp"], `${pipeline.id} receivers`)
      assert.isAbove(pipeline.exporters.length, 0, `${pipeline.id} has no exporter`)
    }
  })

  it("defines every receiver, processor and exporter a pipeline names", () => {
    const config = loadConfig()
    for (const pipeline of pipelinesOf(config)) {
      for (const section of SECTIONS) {
        const defined = Object.keys(dict(config[section], section))
        for (const id of pipeline[section]) {
          assert.include(defined, id, `pipeline ${pipeline.id} uses ${section.slice(0, -1)} "${id}" that is not defined`)
        }
      }
    }
  })

  it("uses every receiver, processor, exporter and extension it defines", () => {
    const config = loadConfig()
    const pipelines = pipelinesOf(config)
    for (const section of SECTIONS) {
      const used = new Set(pipelines.flatMap((p) => p[section]))
      for (const id of Object.keys(dict(config[section], section))) {
        assert.isTrue(used.has(id), `${section.slice(0, -1)} "${id}" is defined but no pipeline uses it`)
      }
    }
    const service = dict(config["service"], "service")
    const enabled = strings(service["extensions"], "service.extensions")
    const defined = Object.keys(dict(config["extensions"], "extensions"))
    assert.sameMembers([...enabled], defined, "service.extensions must list exactly the defined extensions")
  })

  it("runs memory_limiter first and batch after it in every pipeline", () => {
    for (const pipeline of pipelinesOf(loadConfig())) {
      assert.strictEqual(pipeline.processors[0], "memory_limiter", `${pipeline.id}: memory_limiter must come first`)
      assert.isAbove(pipeline.processors.indexOf("batch"), 0, `${pipeline.id}: batch must follow memory_limiter`)
    }
  })

  it("bounds memory with a spike allowance below the hard limit", () => {
    const limiter = dict(dict(loadConfig()["processors"], "processors")["memory_limiter"], "memory_limiter")
    assert.isString(limiter["check_interval"])
    assert.isNumber(limiter["limit_mib"])
    assert.isNumber(limiter["spike_limit_mib"])
    assert.isBelow(Number(limiter["spike_limit_mib"]), Number(limiter["limit_mib"]))
  })

  it("binds the OTLP receiver on all interfaces, gRPC 4317 and HTTP 4318", () => {
    const otlp = dict(dict(loadConfig()["receivers"], "receivers")["otlp"], "receivers.otlp")
    const protocols = dict(otlp["protocols"], "receivers.otlp.protocols")
    assert.strictEqual(dict(protocols["grpc"], "grpc")["endpoint"], "0.0.0.0:4317")
    assert.strictEqual(dict(protocols["http"], "http")["endpoint"], "0.0.0.0:4318")
  })

  it("uses current exporter names: no removed `logging`, no deprecated `otlp`/`otlphttp` aliases", () => {
    const types = Object.keys(dict(loadConfig()["exporters"], "exporters")).map(componentType)
    assert.notInclude(types, "logging", "the logging exporter was removed; use debug")
    assert.notInclude(types, "otlp", "the otlp exporter type is a deprecated alias of otlp_grpc")
    assert.notInclude(types, "otlphttp", "the otlphttp exporter type is a deprecated alias of otlp_http")
  })

  it("routes traces to Jaeger over plaintext OTLP gRPC and everything to debug, and serves no metrics endpoint of its own", () => {
    const config = loadConfig()
    const exporters = dict(config["exporters"], "exporters")
    const byType = (pipelineType: string) => pipelinesOf(config).find((p) => p.id === pipelineType)?.exporters ?? []

    const jaegerIds = byType("traces").filter((id) => componentType(id) === "otlp_grpc")
    assert.strictEqual(jaegerIds.length, 1, "traces must export over otlp_grpc exactly once")
    const jaeger = dict(exporters[jaegerIds[0]!], "jaeger exporter")
    assert.strictEqual(jaeger["endpoint"], "jaeger:4317")
    assert.strictEqual(dict(jaeger["tls"], "jaeger exporter tls")["insecure"], true)

    // Prometheus scrapes the service's METRICS_PORT: a second endpoint would count every series twice.
    assert.notInclude(Object.keys(exporters).map(componentType), "prometheus")
    assert.notInclude(Object.keys(exporters).map(componentType), "prometheusremotewrite")
    for (const signal of ["traces", "metrics", "logs"]) assert.include(byType(signal), "debug", signal)

    const extensions = dict(config["extensions"], "extensions")
    assert.strictEqual(dict(extensions["health_check"], "health_check")["endpoint"], "0.0.0.0:13133")
  })

  it("the runbook names the same ports as otel-collector.yaml and compose.yaml", () => {
    const watched = [4317, 4318, 8889, 9090, 13133, 16686]
    const known = new Set([...endpointPorts(loadConfig()), ...composePublishedPorts()])
    const used = watched.filter((port) => known.has(port))
    // The collector's OTLP ports must be there whatever the runbook says.
    assert.includeMembers(used, [4317, 4318], "the OTLP receiver ports are missing from the config")

    // The runbook is written separately. Until it exists there is nothing to compare.
    if (fs.existsSync(runbookPath)) {
      const readme = fs.readFileSync(runbookPath, "utf8")
      const mentioned = new Set([...readme.matchAll(/\b(4317|4318|8889|9090|13133|16686)\b/g)].map((m) => Number(m[1])))
      for (const port of mentioned) {
        assert.isTrue(known.has(port), `docs/operations.md mentions port ${port}, but neither otel-collector.yaml nor compose.yaml uses it`)
      }
      for (const port of used) {
        assert.isTrue(mentioned.has(port), `the stack uses port ${port}, but docs/operations.md does not mention it`)
      }
    }
  })
})
