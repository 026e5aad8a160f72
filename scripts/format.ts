// The formatter: dprint's TypeScript plugin (the style of the Effect codebase) with the settings of
// dprint.json, run through dprint's JS API. The dprint CLI would do the same, but its npm package
// lists platform binaries some registries lack, and `npm ci` then refuses the lock.
//   node scripts/format.ts           formats every tracked .ts file in place
//   node scripts/format.ts --check   lists the files that are not formatted and exits 1
import { createContext } from "@dprint/formatter"
import { getPath } from "@dprint/typescript"
import { execFileSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"

const check = process.argv.includes("--check")
const config = JSON.parse(readFileSync("dprint.json", "utf8")) as { typescript: Record<string, unknown>; excludes: Array<string> }
const context = createContext()
context.addPlugin(readFileSync(getPath()), config.typescript)

const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts"], { encoding: "utf8" })
  .split("\n")
  .filter((file) => file !== "" && !config.excludes.some((excluded) => file.startsWith(`${excluded}/`)))

/** dprint settles some constructs only on a second pass: format until nothing changes. */
const format = (file: string, text: string, passes = 5): string => {
  const formatted = context.formatText({ filePath: file, fileText: text })
  return formatted === text || passes === 1 ? formatted : format(file, formatted, passes - 1)
}

const unformatted = files.filter((file) => {
  const text = readFileSync(file, "utf8")
  const formatted = format(file, text)
  if (formatted === text) return false
  if (!check) writeFileSync(file, formatted)
  return true
})

if (check && unformatted.length > 0) {
  console.error(`not formatted (run npm run format):\n${unformatted.map((file) => `  ${file}`).join("\n")}`)
  process.exit(1)
}
console.log(`${files.length} files checked${check ? "" : `, ${unformatted.length} reformatted`}`)
