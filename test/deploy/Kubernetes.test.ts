// The manifests under deploy/kubernetes/, parsed and checked against the code they run: probe
// paths are routes the service serves, ports are its defaults, the heap fits the memory limit.
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import YAML from "yaml"

const root = fileURLToPath(new URL("../../", import.meta.url))
const read = (file: string) => fs.readFileSync(`${root}${file}`, "utf8")
const DIR = "deploy/kubernetes"

// Shapes of the fields checked here; YAML.parse gives untyped data, and a missing field fails the test.
interface Probe {
  readonly httpGet: { readonly path: string; readonly port: string | number }
  readonly periodSeconds?: number
  readonly failureThreshold?: number
}
interface EnvVar {
  readonly name: string
  readonly value?: string
  readonly valueFrom?: { readonly secretKeyRef?: { readonly name: string; readonly key: string } }
}
interface Container {
  readonly name: string
  readonly image: string
  readonly command?: ReadonlyArray<string>
  readonly ports?: ReadonlyArray<{ readonly name: string; readonly containerPort: number }>
  readonly env: ReadonlyArray<EnvVar>
  readonly resources: { readonly limits: { readonly memory: string }; readonly requests: Record<string, string> }
  readonly startupProbe?: Probe
  readonly livenessProbe?: Probe
  readonly readinessProbe?: Probe
  readonly securityContext: {
    readonly readOnlyRootFilesystem: boolean
    readonly allowPrivilegeEscalation: boolean
    readonly capabilities: { readonly drop: ReadonlyArray<string> }
  }
  readonly volumeMounts: ReadonlyArray<{ readonly name: string; readonly mountPath: string }>
}
interface PodSpec {
  readonly containers: ReadonlyArray<Container>
  readonly restartPolicy?: string
  readonly terminationGracePeriodSeconds?: number
  readonly securityContext: { readonly runAsNonRoot: boolean }
  readonly automountServiceAccountToken: boolean
}
interface Manifest {
  readonly apiVersion: string
  readonly kind: string
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string> }
  readonly spec: Record<string, unknown>
}

const manifests = (): ReadonlyArray<Manifest & { readonly file: string }> =>
  fs.readdirSync(`${root}${DIR}`).filter((file) => file.endsWith(".yaml") && file !== "kustomization.yaml").flatMap((file) =>
    YAML.parseAllDocuments(read(`${DIR}/${file}`)).map((doc) => {
      assert.deepStrictEqual(doc.errors, [], file)
      return { ...(doc.toJS() as Manifest), file }
    })
  )
const one = (kind: string) => {
  const found = manifests().filter((m) => m.kind === kind)
  assert.strictEqual(found.length, 1, `exactly one ${kind}`)
  return found[0]!
}
const podSpec = (workload: Manifest) => (workload.spec["template"] as { spec: PodSpec; metadata: { labels: Record<string, string> } })
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([key, value]) => labels[key] === value)

/** Routes the service answers GET on, from the route definitions. */
const getRoutes = () => [...read("src/http/HealthRoutes.ts").matchAll(/router\.add\(\s*"GET",\s*"([^"]+)"/g)].map((m) => m[1]!)
/** The code's default PORT. */
const defaultPort = () => Number(/port\("PORT"\), \(\) => (\d+)\)/.exec(read("src/Config.ts"))?.[1])
const mebibytes = (quantity: string) => {
  const match = /^(\d+)(Mi|Gi)$/.exec(quantity)
  return match === null ? NaN : Number(match[1]) * (match[2] === "Gi" ? 1024 : 1)
}
/** The V8 heap limit NODE_OPTIONS sets in MiB: old space plus three semi-spaces (64 MiB each unless set, on Node 24). */
const heapCap = (env: ReadonlyArray<EnvVar>) => {
  const options = env.find((v) => v.name === "NODE_OPTIONS")?.value ?? ""
  return Number(/--max-old-space-size=(\d+)/.exec(options)?.[1]) + 3 * Number(/--max-semi-space-size=(\d+)/.exec(options)?.[1] ?? 64)
}

describe("Kubernetes manifests (deploy/kubernetes)", () => {
  it("parse, and hold a Deployment, a Service, a PodDisruptionBudget, an Ingress, a ServiceMonitor and a migration Job", () => {
    const kinds = manifests().map((m) => m.kind).sort()
    assert.deepStrictEqual(kinds, ["Deployment", "Ingress", "Job", "PodDisruptionBudget", "Service", "ServiceMonitor"])
    for (const m of manifests()) {
      assert.isString(m.apiVersion, m.file)
      assert.isString(m.metadata.name, m.file)
    }
    const kustomization = YAML.parse(read(`${DIR}/kustomization.yaml`)) as { resources: ReadonlyArray<string> }
    const files = new Set(manifests().map((m) => m.file))
    for (const resource of kustomization.resources) assert.isTrue(files.has(resource), resource)
    // The Job is run on its own, once per deploy, before the Deployment is applied.
    assert.notInclude(kustomization.resources, "migration-job.yaml")
  })

  it("probe readiness on /health, liveness and start-up on /health/live: routes the service serves, on its default port", () => {
    const container = podSpec(one("Deployment")).spec.containers[0]!
    const routes = getRoutes()
    assert.includeMembers(routes, ["/health", "/health/live"])
    assert.strictEqual(container.readinessProbe?.httpGet.path, "/health")
    assert.strictEqual(container.livenessProbe?.httpGet.path, "/health/live")
    assert.strictEqual(container.startupProbe?.httpGet.path, "/health/live")
    const http = container.ports?.find((port) => port.name === "http")
    assert.strictEqual(http?.containerPort, defaultPort())
    assert.strictEqual(http?.containerPort, Number(/\bEXPOSE (\d+)/.exec(read("Dockerfile"))?.[1]))
    assert.isUndefined(container.env.find((v) => v.name === "PORT"), "the default PORT is the one the probes use")
    for (const probe of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
      assert.strictEqual(probe?.httpGet.port, "http")
    }
    // Start-up allows for the migrations a replica runs before it listens.
    assert.isAtLeast((container.startupProbe?.periodSeconds ?? 10) * (container.startupProbe?.failureThreshold ?? 3), 60)
  })

  it("caps the heap below the memory limit, drops every privilege and leaves time for the drain", () => {
    const spec = podSpec(one("Deployment")).spec
    const container = spec.containers[0]!
    assert.isAtMost(heapCap(container.env), mebibytes(container.resources.limits.memory) * 0.8)
    assert.isDefined(container.resources.requests["cpu"])
    assert.isDefined(container.resources.requests["memory"])
    assert.isTrue(spec.securityContext.runAsNonRoot)
    assert.isFalse(spec.automountServiceAccountToken)
    assert.isTrue(container.securityContext.readOnlyRootFilesystem)
    assert.isFalse(container.securityContext.allowPrivilegeEscalation)
    assert.deepStrictEqual(container.securityContext.capabilities.drop, ["ALL"])
    assert.include(container.volumeMounts.map((m) => m.mountPath), "/tmp")
    const graceMs = Number(/"SHUTDOWN_GRACE_MS", ([\d_]+)/.exec(read("src/Config.ts"))?.[1]?.replace(/_/g, ""))
    // The drain, then up to 5 s of telemetry flush, before Kubernetes sends SIGKILL.
    assert.isAbove(spec.terminationGracePeriodSeconds ?? 30, graceMs / 1000 + 5)
  })

  it("takes secrets from a Secret, never from the manifest", () => {
    for (const workload of [one("Deployment"), one("Job")]) {
      for (const container of podSpec(workload).spec.containers) {
        for (const name of ["DATABASE_URL", "BOT_TOKEN", "WEBHOOK_SECRET"]) {
          const variable = container.env.find((v) => v.name === name)
          if (variable === undefined) continue
          assert.isUndefined(variable.value, `${workload.kind} ${name}`)
          assert.isDefined(variable.valueFrom?.secretKeyRef, `${workload.kind} ${name}`)
        }
      }
    }
  })

  it("selects the Deployment's pods from the Service, the PodDisruptionBudget and the ServiceMonitor's Service", () => {
    const deployment = one("Deployment")
    const podLabels = podSpec(deployment).metadata.labels
    assert.isTrue(matches((deployment.spec["selector"] as { matchLabels: Record<string, string> }).matchLabels, podLabels))
    const service = one("Service")
    assert.isTrue(matches(service.spec["selector"] as Record<string, string>, podLabels))
    const pdb = one("PodDisruptionBudget")
    assert.isTrue(matches((pdb.spec["selector"] as { matchLabels: Record<string, string> }).matchLabels, podLabels))
    assert.isAtLeast(Number(deployment.spec["replicas"]), 2, "a budget of one available pod needs two")
    const monitor = one("ServiceMonitor")
    assert.isTrue(matches((monitor.spec["selector"] as { matchLabels: Record<string, string> }).matchLabels, service.metadata.labels ?? {}))
  })

  it("scrapes one port: the ServiceMonitor reads /metrics on the Service port that leads to METRICS_PORT", () => {
    const container = podSpec(one("Deployment")).spec.containers[0]!
    const metricsPort = Number(container.env.find((v) => v.name === "METRICS_PORT")?.value)
    assert.strictEqual(container.ports?.find((port) => port.name === "metrics")?.containerPort, metricsPort)
    const endpoints = one("ServiceMonitor").spec["endpoints"] as ReadonlyArray<{ port: string; path: string }>
    assert.strictEqual(endpoints.length, 1)
    assert.strictEqual(endpoints[0]?.path, "/metrics")
    const servicePorts = one("Service").spec["ports"] as ReadonlyArray<{ name: string; targetPort: string }>
    assert.strictEqual(servicePorts.find((port) => port.name === endpoints[0]?.port)?.targetPort, "metrics")
    // The job label is the Service's name; the alert rules' `up{job="steadfast"}` depends on it.
    assert.include(read("deploy/prometheus/alerts.yaml"), `up{job="${one("Service").metadata.name}"}`)
  })

  it("exposes only POST /webhook through the Ingress", () => {
    const rules = one("Ingress").spec["rules"] as ReadonlyArray<
      { http: { paths: ReadonlyArray<{ path: string; pathType: string; backend: { service: { name: string; port: { name: string } } } }> } }
    >
    const paths = rules.flatMap((rule) => rule.http.paths)
    assert.deepStrictEqual(paths.map((p) => [p.path, p.pathType]), [["/webhook", "Exact"]])
    assert.strictEqual(paths[0]?.backend.service.name, one("Service").metadata.name)
    assert.strictEqual(paths[0]?.backend.service.port.name, "http")
  })

  it("migrates in a Job: `npm run migrate` in the Deployment's image, not retried forever", () => {
    const job = one("Job")
    const spec = podSpec(job).spec
    const container = spec.containers[0]!
    const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts
    assert.strictEqual(container.command?.join(" "), scripts["migrate"])
    assert.strictEqual(container.image, podSpec(one("Deployment")).spec.containers[0]!.image)
    assert.oneOf(spec.restartPolicy, ["Never", "OnFailure"])
    assert.isAtMost(Number(job.spec["backoffLimit"]), 6)
    assert.isAtMost(heapCap(container.env), mebibytes(container.resources.limits.memory) * 0.8)
    assert.isTrue(container.securityContext.readOnlyRootFilesystem)
  })
})
