import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"

// The README, the runbook, the payments page, .env.example and compose.yaml describe the code:
// these checks keep them in step.

const root = fileURLToPath(new URL("../", import.meta.url))
const read = (file: string) => fs.readFileSync(`${root}${file}`, "utf8")

/** Variables src/Config.ts reads by name, except the OpenTelemetry ones (standard, documented by OpenTelemetry). */
const configVariables = () =>
  [...new Set([...read("src/Config.ts").matchAll(/"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT|HOST)"/g)].map((m) => m[1]!))]
    .filter((name) => !name.startsWith("OTEL_"))

/** The OpenTelemetry variables the service reads by their full name. */
const otelVariables = () => [
  ...new Set(
    ["src/Config.ts", "src/observability/Telemetry.ts"].flatMap((file) =>
      [...read(file).matchAll(/"(OTEL_[A-Z0-9_]+)"/g)].map((m) => m[1]!)
    )
  )
]

/** The pages a newcomer and an operator read; their links and the files they name are checked. */
const PAGES = ["README.md", "docs/operations.md", "src/payments/README.md"]

/** Written by runs, or never part of the repository. */
const SKIPPED_DIRECTORIES = new Set([".git", "node_modules", ".data", "results"])

/** Every file and folder of the repository (folders with a trailing slash too), built from the tree itself. */
const repositoryPaths = (): ReadonlySet<string> => {
  const paths = new Set<string>()
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(`${root}${dir}`, { withFileTypes: true })) {
      const path = `${dir}${entry.name}`
      if (entry.isDirectory()) {
        if (SKIPPED_DIRECTORIES.has(entry.name)) continue
        paths.add(path).add(`${path}/`)
        walk(`${path}/`)
      } else paths.add(path)
    }
  }
  walk("")
  return paths
}

/** GitHub's anchor for a Markdown heading (as test/deploy/Monitoring.test.ts computes it). */
const anchorOf = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-")

const anchorsOf = (file: string): ReadonlySet<string> =>
  new Set(read(file).split("\n").filter((line) => /^#{1,6} /.test(line)).map((line) => anchorOf(line.replace(/^#+ /, ""))))

/** Text outside fenced code blocks, where links and named files mean something. */
const prose = (text: string) => text.replace(/^```[\s\S]*?^```/gm, "")

/** Resolves a link written in `page` to a repository path (`a/../b` folded). */
const resolve = (page: string, link: string): string => {
  const parts = [...page.split("/").slice(0, -1), ...link.split("/")]
  const out: Array<string> = []
  for (const part of parts) {
    if (part === "..") out.pop()
    else if (part !== ".") out.push(part)
  }
  return out.join("/")
}

describe("README", () => {
  it("says each thing once: no section heading appears twice", () => {
    const headings = read("README.md").split("\n").filter((line) => /^#{1,3} /.test(line))
    const seen = new Set<string>()
    for (const heading of headings) {
      assert.isFalse(seen.has(heading), `"${heading}" appears twice`)
      seen.add(heading)
    }
  })

  it("is a page a newcomer reads in ten minutes, pointing to the runbook, the protocol, payments and the bench", () => {
    const text = read("README.md")
    assert.isAtMost(text.split("\n").length, 280)
    for (const target of ["docs/operations.md", "src/queue/PROTOCOL.md", "src/payments/README.md", "bench/README.md"]) {
      assert.include(text, `](${target})`, target)
    }
  })

  it("documents every variable the configuration reads", () => {
    const text = read("README.md")
    for (const name of configVariables()) assert.include(text, `\`${name}\``, name)
  })
})

describe("README.md, docs/operations.md and src/payments/README.md", () => {
  it.each(PAGES)("%s: every file it names and every relative link exists in the repository", (page) => {
    const paths = repositoryPaths()
    const text = prose(read(page))
    const named = [
      ...text.matchAll(/`((?:src|test|bench|deploy|docs|scripts|\.ci)\/[A-Za-z0-9_./-]+|[A-Za-z0-9_-]+\.(?:yaml|json|md|example))`/g)
    ].map((m) => m[1]!)
    const linked = [...text.matchAll(/\]\((?!https?:|#)([^)#]+)/g)].map((m) => resolve(page, m[1]!))
    assert.isAbove(named.length + linked.length, 5)
    const missing = [...named, ...linked].filter((path) => !paths.has(path))
    assert.deepStrictEqual(missing, [], `${page} points to files that are not in the repository`)
  })

  it.each(PAGES)("%s: every link to a section names a heading of its page", (page) => {
    const text = prose(read(page))
    for (const [, file, anchor] of text.matchAll(/\]\((?!https?:)([^)#]*)#([^)]+)\)/g)) {
      const target = file === "" ? page : resolve(page, file!)
      assert.isTrue(target.endsWith(".md") && fs.existsSync(`${root}${target}`), `${page}: ${target} is not a page`)
      assert.isTrue(anchorsOf(target).has(anchor!), `${page}: no section #${anchor} in ${target}`)
    }
  })

  it("the OpenTelemetry variables the service reads by name are documented in the README or the runbook", () => {
    const text = read("README.md") + read("docs/operations.md")
    assert.isAtLeast(otelVariables().length, 8)
    for (const name of otelVariables()) assert.include(text, `\`${name}`, name)
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
