// The shipped alert rules and Grafana dashboard name only metrics a running service serves.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import YAML from "yaml"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { exposes, families, scrapeAfterOneUpdate } from "../support/Prometheus.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const read = (file: string) => fs.readFileSync(`${root}${file}`, "utf8")

/** Made by Prometheus itself for every target, not served by the service. */
const PROMETHEUS_BUILTIN = new Set(["up"])

/**
 * The outbox's waiting-call gauges, added on another branch together with the outbox's
 * age-limited retries; the rules and dashboard name them already.
 */
const FROM_OUTBOX_BRANCH = new Set(["steadfast_outbox_waiting_calls", "steadfast_outbox_oldest_waiting_seconds"])

/** Series names in a PromQL expression: identifiers that are neither functions, keywords nor label names. */
const metricNames = (expr: string): ReadonlyArray<string> => {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "\"\"")
    .replace(/\{[^}]*\}/g, "")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")
    .replace(/\[[^\]]*\]/g, "")
  const keywords = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"])
  return [...stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => !/^\s*\(/.test(stripped.slice(m.index + m[0].length)) && !keywords.has(m[0]))
    .map((m) => m[0])
}

/** GitHub's anchor for a Markdown heading. */
const anchorOf = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-")

const runbookAnchors = () =>
  new Set(read("docs/operations.md").split("\n").filter((line) => /^#{1,4} /.test(line)).map((line) => anchorOf(line.replace(/^#+ /, ""))))

interface Rule {
  readonly alert: string
  readonly expr: string
  readonly labels: { readonly severity: string }
  readonly annotations: { readonly summary: string; readonly description: string; readonly runbook: string }
}

const alertRules = (): ReadonlyArray<Rule> => {
  const parsed = YAML.parse(read("deploy/prometheus/alerts.yaml")) as { groups: ReadonlyArray<{ rules: ReadonlyArray<Rule> }> }
  return parsed.groups.flatMap((group) => group.rules)
}

interface Panel {
  readonly title: string
  readonly type: string
  readonly targets?: ReadonlyArray<{ readonly expr: string }>
  readonly panels?: ReadonlyArray<Panel>
}

const dashboard = () =>
  JSON.parse(read("deploy/grafana/steadfast.json")) as {
    readonly uid: string
    readonly panels: ReadonlyArray<Panel>
    readonly templating: { readonly list: ReadonlyArray<{ readonly name: string; readonly query: unknown }> }
  }

const dashboardExprs = () => {
  const all = (panels: ReadonlyArray<Panel>): ReadonlyArray<Panel> => panels.flatMap((panel) => [panel, ...all(panel.panels ?? [])])
  const { panels, templating } = dashboard()
  return [
    ...all(panels).flatMap((panel) => (panel.targets ?? []).map((target) => ({ where: panel.title, expr: target.expr }))),
    ...templating.list.flatMap((variable) => {
      const query = typeof variable.query === "object" && variable.query !== null ? (variable.query as { query?: string }).query : undefined
      const inner = query === undefined ? undefined : /^label_values\(([^,)]+)/.exec(query)?.[1]
      return inner === undefined ? [] : [{ where: `variable ${variable.name}`, expr: inner }]
    })
  ]
}

describe("metric names in PromQL", () => {
  it("are told apart from functions, keywords, label names and ranges", () => {
    assert.deepStrictEqual(
      metricNames(
        "histogram_quantile(0.99, sum by (le, x) (rate(a_seconds_bucket{route=\"/w\", le=~\"1|2\"}[5m]))) / on (instance) b_total > 0 and up == 0"
      ),
      ["a_seconds_bucket", "b_total", "up"]
    )
  })
})

describe("alert rules (deploy/prometheus/alerts.yaml)", () => {
  it("cover dead letters, waiting updates and calls, failed sends, pool timeouts and readiness, each with a runbook section", () => {
    const rules = alertRules()
    const named = (metric: string) => rules.some((rule) => metricNames(rule.expr).includes(metric))
    for (
      const metric of [
        "steadfast_inbox_dead",
        "steadfast_inbox_oldest_pending_age_seconds",
        "steadfast_outbox_oldest_waiting_seconds",
        "steadfast_botapi_call_duration_seconds_count",
        "db_client_connection_timeouts_total",
        "http_server_request_duration_seconds_count",
        "up"
      ]
    ) assert.isTrue(named(metric), `no rule on ${metric}`)
    const anchors = runbookAnchors()
    for (const rule of rules) {
      assert.match(rule.alert, /^Steadfast[A-Z]\w+$/)
      assert.oneOf(rule.labels.severity, ["critical", "warning", "info"], rule.alert)
      assert.isNotEmpty(rule.annotations.summary, rule.alert)
      const [file, anchor] = rule.annotations.runbook.split("#")
      assert.strictEqual(file, "docs/operations.md", rule.alert)
      assert.isTrue(anchors.has(anchor ?? ""), `${rule.alert}: no section #${anchor} in docs/operations.md`)
    }
    assert.strictEqual(new Set(rules.map((rule) => rule.alert)).size, rules.length, "alert names are unique")
  })
})

describe("Grafana dashboard (deploy/grafana/steadfast.json)", () => {
  it("has a stable uid, a data source variable and panels with queries", () => {
    const { panels, templating, uid } = dashboard()
    assert.strictEqual(uid, "steadfast")
    assert.include(templating.list.map((variable) => variable.name), "datasource")
    assert.isAbove(dashboardExprs().length, 20)
    const ids = panels.map((panel) => (panel as { id?: number }).id)
    assert.strictEqual(new Set(ids).size, ids.length, "panel ids are unique")
  })
})

describe("alert rules and dashboard against a running service", () => {
  it.live("every metric they name is on its /metrics (or is Prometheus' own, or the outbox branch's two gauges)", () =>
    Effect.gen(function*() {
      const { scrape, service } = yield* scrapeAfterOneUpdate("monitoring", 8201, 5550821)
      const found = families(scrape.body)
      const sources = [
        ...alertRules().map((rule) => ({ where: `alert ${rule.alert}`, expr: rule.expr })),
        ...dashboardExprs().map(({ expr, where }) => ({ where: `panel ${where}`, expr }))
      ]
      let checked = 0
      for (const { expr, where } of sources) {
        const names = metricNames(expr)
        assert.isNotEmpty(names, `${where} names no metric`)
        for (const name of names) {
          checked++
          if (PROMETHEUS_BUILTIN.has(name) || FROM_OUTBOX_BRANCH.has(name)) continue
          assert.isTrue(exposes(found, name), `${where}: ${name} is not on /metrics`)
        }
      }
      assert.isAbove(checked, 40)
      yield* service.kill("SIGTERM")
      assert.deepStrictEqual(yield* service.exited, { code: 0, signal: null })
    }).pipe(Effect.scoped, Effect.provide(BotApiRecorder.layer())))
})
