// `npm run mutations [-- [--no-baseline] name ...]`: proves each guarantee's test bites. For every
// mutation in mutations.ts (or only the named ones) it applies the one change to a scratch copy of
// the repo, runs the named test file there, and reports "killed" (the test failed, as it must) or
// "SURVIVED" (the guarantee can break unnoticed). First each test file runs unchanged: a test that
// fails anyway proves nothing ("baseline fails"). Not a vitest file: vitest only includes *.test.ts.
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { type Edit, type Mutation, mutations } from "./mutations.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const args = process.argv.slice(2)
const baseline = !args.includes("--no-baseline")
const wanted = args.filter((arg) => !arg.startsWith("--"))
const unknown = wanted.filter((name) => !mutations.some((mutation) => mutation.name === name))
if (unknown.length > 0) {
  console.error(`unknown mutation(s): ${unknown.join(", ")}\nknown: ${mutations.map((mutation) => mutation.name).join(", ")}`)
  process.exit(2)
}
const selected = wanted.length === 0 ? mutations : mutations.filter((mutation) => wanted.includes(mutation.name))

// A scratch copy, so the working tree is never touched; node_modules is linked, not copied.
const scratch = mkdtempSync(join(tmpdir(), "steadfast-mutations-"))
const skipped = new Set(["node_modules", ".git", ".data"])
/** (Re)makes the scratch copy: a long run must survive someone clearing the temporary directory. */
const prepareScratch = () => {
  if (existsSync(join(scratch, "node_modules/vitest/vitest.mjs"))) return
  rmSync(scratch, { recursive: true, force: true })
  cpSync(root, scratch, {
    recursive: true,
    filter: (source) => !skipped.has(basename(source)) || relative(root, source).includes("/")
  })
  symlinkSync(join(root, "node_modules"), join(scratch, "node_modules"), "dir")
}
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }))

type Outcome = "killed" | "SURVIVED" | "NOT APPLIED" | "BASELINE FAILS"

/** The test file, narrowed to the tests whose names contain `testName` when the mutation names one. */
const target = (mutation: Mutation) => mutation.testName === undefined ? mutation.test : `${mutation.test} -t "${mutation.testName}"`

const runTest = (mutation: Mutation) => {
  const started = performance.now()
  prepareScratch()
  const filter = mutation.testName === undefined ? [] : ["-t", mutation.testName]
  // This Node (24) runs vitest, whatever `node` the PATH would find first.
  const result = spawnSync(process.execPath, [join(scratch, "node_modules/vitest/vitest.mjs"), "run", mutation.test, ...filter], {
    cwd: scratch,
    encoding: "utf8",
    env: { ...process.env, CI: "1", PATH: `${dirname(process.execPath)}:${process.env["PATH"] ?? ""}` },
    maxBuffer: 256 * 1024 * 1024
  })
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the ANSI colours of vitest's output
  const output = `${result.stdout}${result.stderr}`.replace(/\x1b\[[0-9;]*m/g, "")
  return { passed: result.status === 0, output, seconds: Math.round((performance.now() - started) / 1000) }
}

/** Which test failed, and its first error: the failure must be the guarantee's, not an accident. */
const failureOf = (output: string) => {
  const lines = output.split("\n")
  const error = lines.find((line) => /^\s*\w*Error: /.test(line))
  return [...lines.filter((line) => /^\s*FAIL\s/.test(line)), ...(error === undefined ? [] : [error])].map((line) => `    ${line.trim()}`)
}

const editsOf = (mutation: Mutation): ReadonlyArray<Edit> => [mutation, ...(mutation.also ?? [])]

/** Applies every edit of `mutation` to the scratch copy, or none when one does not fit. */
const apply = (mutation: Mutation): boolean => {
  prepareScratch()
  const changed = new Map<string, string>()
  for (const edit of editsOf(mutation)) {
    const original = changed.get(edit.file) ?? readFileSync(join(root, edit.file), "utf8")
    const at = original.indexOf(edit.search)
    // The search string must name one place: a change anywhere else would prove nothing.
    if (at < 0 || original.indexOf(edit.search, at + 1) >= 0) return false
    changed.set(edit.file, original.slice(0, at) + edit.replace + original.slice(at + edit.search.length))
  }
  for (const [file, text] of changed) writeFileSync(join(scratch, file), text)
  return true
}

const restore = (mutation: Mutation) => {
  for (const edit of editsOf(mutation)) cpSync(join(root, edit.file), join(scratch, edit.file))
}

const brokenBaselines = new Set<string>()
if (baseline) {
  const targets = new Map(selected.map((mutation) => [target(mutation), mutation]))
  for (const [name, mutation] of targets) {
    const run = runTest(mutation)
    console.log(`${run.passed ? "passes" : "FAILS "}      ${name} unchanged (${run.seconds} s)`)
    if (!run.passed) {
      brokenBaselines.add(name)
      console.log(failureOf(run.output).join("\n"))
    }
  }
}

const results: Array<{ readonly mutation: Mutation; readonly outcome: Outcome; readonly seconds: number }> = []
for (const mutation of selected) {
  let outcome: Outcome = "BASELINE FAILS"
  let seconds = 0
  if (!brokenBaselines.has(target(mutation))) {
    outcome = "NOT APPLIED"
    if (apply(mutation)) {
      const run = runTest(mutation)
      seconds = run.seconds
      outcome = run.passed ? "SURVIVED" : "killed"
      if (run.passed) console.error(`--- ${mutation.name} survived; test output ---\n${run.output.slice(-4000)}`)
      else console.log(failureOf(run.output).join("\n"))
    }
    restore(mutation)
  }
  results.push({ mutation, outcome, seconds })
  console.log(`${outcome.padEnd(11)} ${mutation.name} (${target(mutation)}, ${seconds} s)`)
}

const rows = results.map(({ mutation, outcome, seconds }) =>
  `| ${mutation.name} | ${mutation.breaks} | \`${mutation.file}\` | ${target(mutation)} | ${outcome} | ${seconds} s |`
)
console.log(["", "| mutation | breaks | file | test | result | time |", "|---|---|---|---|---|---|", ...rows].join("\n"))
process.exitCode = results.every((result) => result.outcome === "killed") ? 0 : 1
