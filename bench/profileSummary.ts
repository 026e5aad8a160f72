// Where a process spent its CPU, from a V8 `.cpuprofile` (`node --cpu-prof`): self time by
// package and by function. Used by `npm run bench -- --profile`; also runs on its own:
//   node bench/profileSummary.ts <file.cpuprofile> [top]
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}

interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const isCpuProfile = (value: unknown): value is CpuProfile =>
  typeof value === "object" && value !== null && "nodes" in value && Array.isArray(value.nodes) &&
  "samples" in value && Array.isArray(value.samples) && "timeDeltas" in value && Array.isArray(value.timeDeltas)

/** The package or part a script belongs to: `effect`, `@effect/sql-pg`, `src/queue`, `node:internal`, … */
const areaOf = (url: string, functionName: string): string => {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)"
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (modules !== null) return modules[1]!
  if (url.startsWith("node:")) return "node:internal"
  const src = /\/(src|bench|test)\/([^/]+)\//.exec(url)
  if (src !== null) return `${src[1]}/${src[2]}`
  return url.replace(/^file:\/\//, "").split("/").slice(-2).join("/")
}

const shortUrl = (url: string) => url.replace(/^file:\/\/.*?\/(node_modules|src|bench)\//, "$1/")

export const summarizeProfile = (path: string, top = 25): string => {
  const profile: unknown = JSON.parse(readFileSync(path, "utf8"))
  if (!isCpuProfile(profile)) throw new Error(`${path} is not a V8 CPU profile`)
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const byArea = new Map<string, number>()
  const byFunction = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    const dt = profile.timeDeltas[i] ?? 0
    if (node === undefined) return
    const { functionName, url, lineNumber } = node.callFrame
    if (functionName === "(idle)") return
    total += dt
    const area = areaOf(url, functionName)
    byArea.set(area, (byArea.get(area) ?? 0) + dt)
    const key = `${functionName || "(anonymous)"}  ${url === "" ? "" : `${shortUrl(url)}:${lineNumber + 1}`}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + dt)
  })
  const lines = [`CPU profile ${path}: ${(total / 1e6).toFixed(2)} s busy`]
  const share = (us: number) => `${((100 * us) / Math.max(1, total)).toFixed(1).padStart(5)}%`
  lines.push("  self time by package / part:")
  for (const [area, us] of [...byArea].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`    ${share(us)}  ${area}`)
  lines.push(`  top ${top} functions by self time:`)
  for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`    ${share(us)}  ${key}`)
  return lines.join("\n")
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2]
  if (file === undefined) {
    console.error("usage: node bench/profileSummary.ts <file.cpuprofile> [top]")
    process.exit(2)
  }
  console.log(summarizeProfile(file, Number(process.argv[3] ?? 25)))
}
