// The production install holds what the service uses: every production dependency is imported by
// src/ (or supplies a peer that an imported one needs), install scripts run only where pinned.
import { assert, describe, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../", import.meta.url))

interface Manifest {
  readonly dependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly allowScripts?: Record<string, boolean>
}
const manifest = (path: string): Manifest => JSON.parse(readFileSync(path, "utf8")) as Manifest
const own = manifest(join(root, "package.json"))

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : []
  )

/** Package names imported by src/, statically or with import(). */
const importedBySrc = (): Set<string> => {
  const names = new Set<string>()
  const pattern = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)["']([^"'./][^"']*)["']/g
  for (const file of sourceFiles(join(root, "src"))) {
    for (const match of readFileSync(file, "utf8").matchAll(pattern)) {
      const specifier = match[1]!
      if (specifier.startsWith("node:")) continue
      const parts = specifier.split("/")
      names.add(specifier.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!)
    }
  }
  return names
}

describe("dependencies", () => {
  it("every production dependency is imported by src/, or is a peer an imported dependency declares", () => {
    const imported = importedBySrc()
    const peersOfImported = new Set(
      [...imported].filter((name) => own.dependencies?.[name] !== undefined).flatMap((name) =>
        Object.keys(manifest(join(root, "node_modules", name, "package.json")).peerDependencies ?? {})
      )
    )
    const unused = Object.keys(own.dependencies ?? {}).filter((name) => !imported.has(name) && !peersOfImported.has(name))
    assert.deepStrictEqual(unused, [], "production dependencies nothing in src/ uses: remove them or move them to devDependencies")
  })

  it("redis is only a peer of @effect/platform-node: the production install (--omit=dev --omit=peer) leaves it out", () => {
    const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as {
      readonly packages: Record<string, { readonly peer?: boolean; readonly dev?: boolean }>
    }
    assert.isTrue(lock.packages["node_modules/redis"]?.peer === true, "redis became a dependency of something: check why")
    assert.notInclude(importedBySrc(), "redis")
  })

  it("install scripts are allowed only for packages whose version is pinned, and .npmrc makes anything else fail the install", () => {
    // npm pins an allowScripts entry (name@version) only through a lockfile's resolved URL, which
    // this lockfile leaves out; the pin is the lockfile's exact version and integrity hash, and for
    // a direct dependency an exact version in package.json.
    const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as {
      readonly packages: Record<string, { readonly version?: string; readonly integrity?: string }>
    }
    const devDependencies = (manifest(join(root, "package.json")) as Manifest & { devDependencies?: Record<string, string> })
      .devDependencies ?? {}
    const direct: Record<string, string> = { ...own.dependencies, ...devDependencies }
    const allowed = Object.entries(own.allowScripts ?? {}).filter(([, allow]) => allow).map(([name]) => name)
    assert.isNotEmpty(allowed)
    for (const name of allowed) {
      assert.match(name, /^(@[^/@]+\/)?[^@]+$/, `${name}: a name, pinned by the lockfile`)
      const entry = lock.packages[`node_modules/${name}`]
      assert.isDefined(entry?.version, `${name} is not in package-lock.json`)
      assert.match(entry?.integrity ?? "", /^sha512-/, `${name} has no integrity hash in package-lock.json`)
      if (direct[name] !== undefined) assert.strictEqual(direct[name], entry?.version, `${name} must be an exact version in package.json`)
    }
    assert.match(readFileSync(join(root, ".npmrc"), "utf8"), /^strict-allow-scripts=true$/m)
  })
})
