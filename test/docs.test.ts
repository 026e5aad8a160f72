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
