// The bench's own report: `npm run bench` rewrites the part of bench/README.md between the two
// markers below with the figures of the run (date, machine, command, medians, targets); the rest
// of that file is prose kept by hand.
import { existsSync, readFileSync, writeFileSync } from "node:fs"

export const REPORT_START = "<!-- bench report: written by `npm run bench`, do not edit by hand -->"
export const REPORT_END = "<!-- end of bench report -->"
/** The telemetry round (`--telemetry`) keeps a section of its own, so neither run replaces the other's figures. */
export const TELEMETRY_START = "<!-- bench telemetry report: written by `npm run bench -- --telemetry`, do not edit by hand -->"
export const TELEMETRY_END = "<!-- end of bench telemetry report -->"

export interface ReportTable {
  readonly title: string
  readonly note?: string
  readonly header: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string>>
}

export interface Report {
  readonly date: string
  readonly command: string
  readonly machine: string
  readonly code: string
  readonly settings: string
  readonly notes: ReadonlyArray<string>
  readonly tables: ReadonlyArray<ReportTable>
}

const cell = (text: string) => text.replace(/\|/g, "\\|")

export const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  [
    `| ${header.map(cell).join(" | ")} |`,
    `|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((row) => `| ${row.map(cell).join(" | ")} |`)
  ].join("\n")

export const renderReport = (report: Report): string =>
  [
    `Run of ${report.date}: \`${report.command}\``,
    "",
    `- machine: ${report.machine}`,
    `- code: ${report.code}`,
    `- settings: ${report.settings}`,
    ...report.notes.map((note) => `- ${note}`),
    "",
    ...report.tables.flatMap((
      t
    ) => [`### ${t.title}`, "", ...(t.note === undefined ? [] : [t.note, ""]), markdownTable(t.header, t.rows), ""])
  ].join("\n")

/** Replaces the report of `kind` between its markers in `file` (appending the markers if it has none). */
export const writeReport = (file: string, body: string, kind: "main" | "telemetry" = "main"): void => {
  const [open, close] = kind === "main" ? [REPORT_START, REPORT_END] : [TELEMETRY_START, TELEMETRY_END]
  const current = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmark\n"
  const start = current.indexOf(open)
  const end = current.indexOf(close)
  const section = `${open}\n\n${body.trimEnd()}\n\n${close}`
  const next = start >= 0 && end > start
    ? current.slice(0, start) + section + current.slice(end + close.length)
    : `${current.trimEnd()}\n\n${section}\n`
  writeFileSync(file, next)
}
