import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"

// The README, .env.example and compose.yaml describe the code: these checks keep them in step.

const root = fileURLToPath(new URL("../", import.meta.url))
const read = (file: string) => fs.readFileSync(`${root}${file}`, "utf8")

/** Variables src/Config.ts reads by name, except the OpenTelemetry ones (standard, documented by OpenTelemetry). */
const configVariables = () =>
  [...new Set([...read("src/Config.ts").matchAll(/"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT|HOST)"/g)].map((m) => m[1]!))]
    .filter((name) => !name.startsWith("OTEL_"))

describe("README", () => {
  it("says each thing once: no section heading appears twice", () => {
    const headings = read("README.md").split("\n").filter((line) => /^#{1,3} /.test(line))
    const seen = new Set<string>()
    for (const heading of headings) {
      assert.isFalse(seen.has(heading), `"${heading}" appears twice`)
      seen.add(heading)
    }
  })

  it("every file it names and every relative link exists", () => {
    const text = read("README.md")
    const named = [...text.matchAll(/`((?:src|test|bench|\.ci)\/[A-Za-z0-9_./-]+|[A-Za-z0-9_-]+\.(?:yaml|json|md|example))`/g)].map((m) =>
      m[1]!
    )
    const linked = [...text.matchAll(/\]\((?!https?:)([^)#]+)/g)].map((m) => m[1]!)
    assert.isAbove(named.length, 10)
    // Written by runs, not part of the repository.
    const outputs = new Set(["bench/results/"])
    for (const path of [...named, ...linked].filter((p) => !outputs.has(p))) {
      assert.isTrue(fs.existsSync(`${root}${path}`), `${path} does not exist`)
    }
  })

  it("documents every variable the configuration reads", () => {
    const text = read("README.md")
    for (const name of configVariables()) assert.include(text, `\`${name}\``, name)
  })
})

describe("docs/operations.md (the runbook)", () => {
  const runbook = () => read("docs/operations.md")

  it("has a section for every health check the service reports, and for both health routes", () => {
    const checks = [...new Set([...read("src/http/HealthRoutes.ts").matchAll(/"([a-z]+:[A-Za-z]+)":/g)].map((m) => m[1]!))]
    assert.isAtLeast(checks.length, 7)
    const headings = runbook().split("\n").filter((line) => line.startsWith("### "))
    for (const check of checks) assert.isTrue(headings.some((h) => h.startsWith(`### \`${check}\``)), check)
    const routes = [...read("src/http/HealthRoutes.ts").matchAll(/router\.add\(\s*"GET",\s*"([^"]+)"/g)].map((m) => m[1]!)
    for (const route of routes) assert.isTrue(headings.some((h) => h.startsWith(`### GET ${route} `)), route)
  })

  it("explains every exit code the service sets", () => {
    const codes = new Set(
      ["src/main.ts", "src/Lifecycle.ts"].flatMap((file) =>
        [...read(file).matchAll(/(?:process\.exit|onExit)\(([^()]*(?:\([^()]*\)[^()]*)*)\)/g)].flatMap((m) =>
          [...m[1]!.matchAll(/\b\d+\b/g)].map((n) => n[0])
        )
      )
    )
    assert.includeMembers([...codes], ["0", "1", "130", "143"])
    for (const code of codes) assert.match(runbook(), new RegExp(`^\\| [^|]*\`${code}\``, "m"), `exit code ${code}`)
  })

  it("is linked from the README, with the deploy steps the README leaves to it", () => {
    assert.include(read("README.md"), "](docs/operations.md)")
    for (const file of ["deploy/kubernetes/migration-job.yaml", "deploy/caddy/Caddyfile", "deploy/prometheus/alerts.yaml"]) {
      assert.include(runbook(), file)
      assert.isTrue(fs.existsSync(`${root}${file}`), file)
    }
  })
})

describe(".env.example", () => {
  it("lists every variable the configuration reads", () => {
    const listed = new Set(read(".env.example").split("\n").map((line) => /^([A-Z_]+)=/.exec(line)?.[1]).filter((n) => n !== undefined))
    assert.isAbove(configVariables().length, 15)
    for (const name of configVariables()) assert.isTrue(listed.has(name), name)
  })
})

describe("compose.yaml", () => {
  it("its shutdown comment states the default grace period", () => {
    const defaultMs = Number(/"SHUTDOWN_GRACE_MS", ([\d_]+)/.exec(read("src/Config.ts"))?.[1]?.replace(/_/g, ""))
    assert.include(read("compose.yaml"), `SHUTDOWN_GRACE_MS, ${defaultMs / 1000} s by default`)
  })
})
