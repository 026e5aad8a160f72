// The shape of src/: no import cycles, and every arrow between its parts points down the order
// below. Relative imports only (packages are test/dependencies.test.ts's business), type-only
// imports included: a type import is still an arrow a reader follows.
import { assert, describe, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../", import.meta.url))

/**
 * The parts of src/, top to bottom. A part is a folder of src/ or a file at its root. A file may
 * import from its own part or from a part in a lower row; never from a row above, nor from
 * another part of its own row.
 */
const ORDER: ReadonlyArray<ReadonlyArray<string>> = [
  ["main.ts"],
  ["App.ts"],
  ["MyBot.ts"],
  ["http", "ops", "sandbox"],
  ["queue"],
  ["payments"],
  ["bot"],
  ["telegram"],
  ["db"],
  ["observability"],
  ["Config.ts", "Lifecycle.ts"]
]

/** The same shapes test/dependencies.test.ts reads: `from "x"`, `import "x"`, `import("x")`. */
const RELATIVE = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)["'](\.\.?\/[^"']+)["']/g

/** The relative specifiers a source text imports. */
const relativeImports = (text: string): Array<string> => [...text.matchAll(RELATIVE)].map((match) => match[1]!)

interface Edge {
  readonly from: string
  readonly to: string
  readonly specifier: string
}

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(`${dir}/${entry.name}`)
      : entry.name.endsWith(".ts")
      ? [`${dir}/${entry.name}`]
      : []
  )

/** Every import between two files of src/ (package.json and other files outside src/ are not parts). */
const edgesOf = (files: ReadonlyArray<string>): Array<Edge> =>
  files.flatMap((from) =>
    relativeImports(readFileSync(join(root, from), "utf8")).flatMap((specifier) => {
      const to = relative(root, join(root, dirname(from), specifier))
      return to.startsWith("src/") && to.endsWith(".ts") ? [{ from, to, specifier }] : []
    })
  )

/** `src/bot/Bot.ts` → `bot`, `src/App.ts` → `App.ts`. */
const partOf = (file: string): string => file.split("/")[1]!

const rowOf = (part: string): number => ORDER.findIndex((row) => row.includes(part))

/** One cycle through each strongly connected group of files (Tarjan), as `a -> b -> a`. */
const cyclesOf = (files: ReadonlyArray<string>, edges: ReadonlyArray<Edge>): Array<string> => {
  const next = new Map<string, Array<string>>(files.map((file) => [file, []]))
  for (const edge of edges) next.get(edge.from)?.push(edge.to)
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: Array<string> = []
  const onStack = new Set<string>()
  const groups: Array<Array<string>> = []
  const visit = (file: string) => {
    index.set(file, index.size)
    low.set(file, index.get(file)!)
    stack.push(file)
    onStack.add(file)
    for (const to of next.get(file) ?? []) {
      if (!index.has(to)) {
        visit(to)
        low.set(file, Math.min(low.get(file)!, low.get(to)!))
      } else if (onStack.has(to)) low.set(file, Math.min(low.get(file)!, index.get(to)!))
    }
    if (low.get(file) === index.get(file)) {
      const group: Array<string> = []
      let member: string
      do {
        member = stack.pop()!
        onStack.delete(member)
        group.push(member)
      } while (member !== file)
      if (group.length > 1 || (next.get(file) ?? []).includes(file)) groups.push(group)
    }
  }
  for (const file of files) if (!index.has(file)) visit(file)
  // Within a group every file reaches every other: walk from its first file back to it.
  return groups.map((group) => {
    const members = new Set(group)
    const start = [...group].sort()[0]!
    const path = [start]
    const seen = new Set<string>()
    const walk = (file: string): boolean => {
      for (const to of next.get(file) ?? []) {
        if (to === start) return true
        if (!members.has(to) || seen.has(to)) continue
        seen.add(to)
        path.push(to)
        if (walk(to)) return true
        path.pop()
      }
      return false
    }
    walk(start)
    return [...path, start].join(" -> ")
  })
}

const files = sourceFiles("src")
const edges = edgesOf(files)

describe("architecture", () => {
  it("reads every shape of relative import, type-only ones included", () => {
    const text = [
      `import { a } from "./a.ts"`,
      `import type { B } from "../b/B.ts"`,
      `import {\n  type C,\n  c\n} from "./c.ts"`,
      `export { d } from "./d.ts"`,
      `export type * from "./e.ts"`,
      `import "./f.ts"`,
      `const g = import("../g.ts")`,
      `import { Effect } from "effect"`,
      `import packageJson from "../../package.json" with { type: "json" }`
    ].join("\n")
    assert.deepStrictEqual(relativeImports(text), [
      "./a.ts",
      "../b/B.ts",
      "./c.ts",
      "./d.ts",
      "./e.ts",
      "./f.ts",
      "../g.ts",
      "../../package.json"
    ])
  })

  it("every part of src/ has one row in the order, and every row names parts that exist", () => {
    const listed = ORDER.flat()
    const parts = new Set(files.map(partOf))
    assert.deepStrictEqual(listed.filter((part, i) => listed.indexOf(part) !== i), [], "parts listed twice")
    assert.deepStrictEqual([...parts].filter((part) => rowOf(part) < 0), [], "parts of src/ missing from ORDER: give each a row")
    assert.deepStrictEqual(listed.filter((part) => !parts.has(part)), [], "parts in ORDER that src/ no longer has")
  })

  it("no import cycle between files of src/", () => {
    assert.isAbove(edges.length, 0)
    assert.deepStrictEqual(cyclesOf(files, edges), [], "import cycles")
  })

  it("every import points to the file's own part or a lower row of the order", () => {
    const upward = edges.filter((edge) => {
      const from = partOf(edge.from)
      const to = partOf(edge.to)
      return from !== to && rowOf(to) <= rowOf(from)
    })
    assert.deepStrictEqual(
      upward.map((edge) =>
        `${edge.from} imports "${edge.specifier}": ${partOf(edge.to)} is ${
          rowOf(partOf(edge.to)) === rowOf(partOf(edge.from)) ? "beside" : "above"
        } ${partOf(edge.from)}`
      ),
      [],
      "imports against the order"
    )
  })
})
