// `npm run bench [-- options]`: steadfast against a plain grammY webhook bot, same machine,
// same PostgreSQL, same Bot API stand-in, same updates. See `--help`.
import { execFileSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import pg from "pg"
import { createDatabase, freePort, startCluster } from "../test/support/EmbeddedCluster.ts"
import { drive, type DriverResult } from "./driver.ts"
import { startMonitor, statementDelta, statementSnapshot, type MonitorResult, type StatementStat } from "./monitor.ts"
import { root, startNode, statusKb, waitForQuiet } from "./processes.ts"
import { runPreCheckout, type PreCheckoutResult } from "./precheckout.ts"
import { summarizeProfile } from "./profileSummary.ts"
import { median } from "./stats.ts"
import { isSinkSnapshot, otlpPaths, type SinkSnapshot } from "./otlpSink.ts"

const usage = `usage: npm run bench -- [options]
  --updates N           updates per run with the fast Bot API (default 5000)
  --chats N             distinct chats (default 500)
  --rounds R            runs per contender with the fast Bot API (default 3)
  --delayed-updates N   updates per run with the slow Bot API (default 600)
  --delayed-rounds R    runs per contender with the slow Bot API (default 1)
  --delay-ms MS         the slow Bot API's delay per call (default 2000)
  --concurrency C       webhook connections at once, Telegram's max_connections (default 40)
  --warmup N            updates sent (and answered) before each measured run (default 300)
  --skip-delayed        only the fast Bot API scenario
  --quick               smoke run: 1000 updates, 1 round, 300 delayed updates, 100 warm-up
  --profile             run both contenders under node --cpu-prof and print where their CPU went
                        (profiling slows them down: do not compare these figures with normal runs)
  --only NAME           run one contender only: peer, steadfast, steadfast-grammy or steadfast-x2 (no ratios then)
  --scaling             also run steadfast-x2: two steadfast instances on one database, the driver posting to
                        them round robin (CPU and RSS are the two processes' sums)
  --steadfast-env K=V   extra environment for steadfast (repeatable), e.g. --steadfast-env DB_POOL_MAX=20
  --only-precheckout    run the pre-checkout scenario alone (steadfast only)
  --skip-precheckout    leave the pre-checkout scenario out
  --precheckout-seconds S  load duration of the pre-checkout scenario (default 30; 10 with --quick)
  --precheckout-rate N  pre-checkout queries per second, one order each (default 5)
  --background-rate N   ordinary updates per second during the pre-checkout scenario (default 200)
  --telemetry           telemetry overhead instead of the usual scenarios: steadfast without OTEL_* variables against
                        "steadfast+otel" exporting traces, metrics and logs to a local OTLP/HTTP sink the bench starts
                        (bench/otlpSink.ts), alternating off/on for --rounds rounds on the fast Bot API; no peer,
                        no slow Bot API, no pre-checkout scenario
  --quiet-wait S        before each run, wait up to S seconds for a second with the machine < 25% busy (default 5)
  --help`

const { values } = parseArgs({
  options: {
    updates: { type: "string" },
    chats: { type: "string" },
    rounds: { type: "string" },
    "delayed-updates": { type: "string" },
    "delayed-rounds": { type: "string" },
    "delay-ms": { type: "string" },
    concurrency: { type: "string" },
    warmup: { type: "string" },
    "skip-delayed": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    "quiet-wait": { type: "string" },
    "steadfast-env": { type: "string", multiple: true },
    only: { type: "string" },
    "only-precheckout": { type: "boolean", default: false },
    "skip-precheckout": { type: "boolean", default: false },
    "precheckout-seconds": { type: "string" },
    "precheckout-rate": { type: "string" },
    "background-rate": { type: "string" },
    quick: { type: "boolean", default: false },
    scaling: { type: "boolean", default: false },
    telemetry: { type: "boolean", default: false },
    help: { type: "boolean", default: false }
  }
})
if (values.help) {
  console.log(usage)
  process.exit(0)
}

const positive = (name: string, value: string | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer\n${usage}`)
    process.exit(2)
  }
  return n
}

const steadfastEnv: Record<string, string> = {}
for (const pair of values["steadfast-env"] ?? []) {
  const at = pair.indexOf("=")
  if (at <= 0) {
    console.error(`--steadfast-env expects KEY=VALUE, got "${pair}"`)
    process.exit(2)
  }
  steadfastEnv[pair.slice(0, at)] = pair.slice(at + 1)
}

const quick = values.quick
const settings = {
  updates: positive("updates", values.updates, quick ? 1000 : 5000),
  chats: positive("chats", values.chats, 500),
  rounds: positive("rounds", values.rounds, quick ? 1 : 3),
  delayedUpdates: positive("delayed-updates", values["delayed-updates"], quick ? 300 : 600),
  delayedRounds: positive("delayed-rounds", values["delayed-rounds"], values["skip-delayed"] ? 0 : 1),
  delayMs: positive("delay-ms", values["delay-ms"], 2000),
  concurrency: positive("concurrency", values.concurrency, 40),
  warmup: positive("warmup", values.warmup, quick ? 100 : 300),
  startShare: 0.05,
  sendRatePerSecond: 100_000,
  profile: values.profile,
  quietWaitSeconds: positive("quiet-wait", values["quiet-wait"], 5),
  steadfastEnv,
  precheckout: {
    enabled: !values["skip-precheckout"] && values.only !== "peer" && !values.telemetry,
    seconds: positive("precheckout-seconds", values["precheckout-seconds"], quick ? 10 : 30),
    queryRate: positive("precheckout-rate", values["precheckout-rate"], 5),
    backgroundRate: positive("background-rate", values["background-rate"], 200)
  }
}
const onlyPreCheckout = values["only-precheckout"]
if (onlyPreCheckout && !settings.precheckout.enabled) {
  console.error(`--only-precheckout cannot be combined with --skip-precheckout or --only peer\n${usage}`)
  process.exit(2)
}

const telemetryMode = values.telemetry
if (telemetryMode && (onlyPreCheckout || values.only !== undefined)) {
  console.error(`--telemetry cannot be combined with --only or --only-precheckout\n${usage}`)
  process.exit(2)
}

type ContenderName = "peer" | "steadfast" | "steadfast-grammy" | "steadfast-x2"
/** What a run is called: a contender, or steadfast exporting to the OTLP sink (--telemetry). */
type RunLabel = ContenderName | "steadfast+otel"
interface Contender {
  readonly name: RunLabel
  readonly script: string
  readonly health: boolean
  /** Processes on one database; the driver posts to them round robin. */
  readonly instances: number
}
const allContenders: ReadonlyArray<Contender & { readonly name: ContenderName }> = [
  { name: "peer", script: "bench/peer/grammyPeer.ts", health: false, instances: 1 },
  { name: "steadfast", script: "src/main.ts", health: true, instances: 1 },
  // The same service with its fallback as a grammY Composer: the adapter's cost against the Effect handler.
  { name: "steadfast-grammy", script: "bench/steadfastGrammy.ts", health: true, instances: 1 },
  // Two instances sharing one database (only with --scaling): how throughput scales from one to two.
  { name: "steadfast-x2", script: "src/main.ts", health: true, instances: 2 }
]
if (values.only !== undefined && !allContenders.some((c) => c.name === values.only)) {
  console.error(`--only must be peer, steadfast, steadfast-grammy or steadfast-x2\n${usage}`)
  process.exit(2)
}
const contenders = allContenders.filter((c) =>
  values.only === undefined ? c.name !== "steadfast-x2" || values.scaling : c.name === values.only
)

interface Scenario {
  readonly name: "fast-api" | "slow-api"
  readonly title: string
  readonly updates: number
  readonly rounds: number
  readonly delayMs: number
}
const allScenarios: ReadonlyArray<Scenario> = [
  { name: "fast-api", title: "Bot API answers at once", updates: settings.updates, rounds: settings.rounds, delayMs: 0 },
  {
    name: "slow-api",
    title: `Bot API takes ${settings.delayMs} ms per call`,
    updates: settings.delayedUpdates,
    rounds: settings.delayedRounds,
    delayMs: settings.delayMs
  }
]
const scenarios = onlyPreCheckout || telemetryMode ? [] : allScenarios.filter((scenario) => scenario.rounds > 0 && scenario.updates > 0)

const TOKEN = "123456:BENCHbenchBENCHbenchBENCHbench00"
const SECRET = "bench-secret_0123456789"

/** What every contender process is started with. */
const serviceEnv = (databaseUrl: string, standInUrl: string, port: number): Record<string, string> => ({
  BOT_TOKEN: TOKEN,
  WEBHOOK_SECRET: SECRET,
  DATABASE_URL: databaseUrl,
  TELEGRAM_API_ROOT: standInUrl,
  PORT: String(port),
  HOST: "127.0.0.1",
  SEND_RATE_PER_SECOND: String(settings.sendRatePerSecond)
})

interface RunResult {
  readonly scenario: Scenario["name"]
  readonly round: number
  readonly contender: RunLabel
  readonly database: string
  readonly startupMs: number
  readonly driver: DriverResult
  readonly monitor: MonitorResult
  /** VmHWM at the end of the run: the process's peak resident set, warm-up included. */
  readonly peakRssKb: number
  readonly rssAfterWarmupKb: number
  readonly statementsPerUpdate: number | undefined
  readonly dbExecMsPerUpdate: number | undefined
  readonly dbPlanMsPerUpdate: number | undefined
  /**
   * Committed + rolled-back transactions in the contender's database over its whole life (start-up,
   * warm-up, run), per update sent. Read after it exited, when its backends have flushed their counters.
   */
  readonly transactionsPerUpdate: number | undefined
  /** Row versions the contender's statements wrote (inserted, updated, deleted), per update. */
  readonly rowVersionsPerUpdate: number
  readonly statements: ReadonlyArray<StatementStat>
  /** The machine's busy share in the second before the run started. */
  readonly busyBefore: number
  readonly profile: string | undefined
  readonly exit: string
  readonly logFile: string
  readonly logProblems: ReadonlyArray<string>
}

const resultsDir = join(root, "bench/results")
const logsDir = join(resultsDir, "logs")
mkdirSync(logsDir, { recursive: true })

const say = (line: string) => console.log(line)

const pad = (text: string, width: number) => (text.length >= width ? text : " ".repeat(width - text.length) + text)
const fmt = (value: number | undefined, digits = 0) =>
  value === undefined || Number.isNaN(value)
    ? "-"
    : value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, leftColumns = 1): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i]!) : pad(cell, widths[i]!))).join("  ")
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

const problemLines = (logFile: string): Array<string> => {
  const text = readFileSync(logFile, "utf8")
  return text.split("\n").filter((line) => /\b(WARN|ERROR|FATAL)\b|update failed/.test(line))
}

const runOne = async (
  cluster: Awaited<ReturnType<typeof startCluster>>,
  admin: pg.Client,
  statements: boolean,
  scenario: Scenario,
  round: number,
  contender: Contender,
  /** Extra environment for the contender, and bench processes besides the stand-in (for the CPU accounting). */
  extra: {
    readonly env: Record<string, string>
    readonly benchPids: ReadonlyArray<number>
    /** Called once the measured run is over, before the contender is stopped. */
    readonly afterDrive?: () => Promise<void>
  } = { env: {}, benchPids: [] }
): Promise<RunResult> => {
  const slug = contender.name.replace(/\W/g, "_")
  const database = `bench_${scenario.name.replace("-", "_")}_${slug}_${round}`
  const databaseUrl = await createDatabase(cluster.url("postgres"), database)
  const tag = `${scenario.name}-${round}-${slug}`
  const busyBefore = settings.quietWaitSeconds > 0 ? await waitForQuiet(0.25, settings.quietWaitSeconds * 1000) : NaN
  if (busyBefore >= 0.25) say(`  ! the machine is busy (${Math.round(busyBefore * 100)}% CPU) with other work; figures will be noisy`)
  const profileDir = join(resultsDir, "profiles", tag)
  if (settings.profile) rmSync(profileDir, { recursive: true, force: true })

  const standIn = startNode("bench/standIn.ts", ["--delay-ms", "0"], {}, join(logsDir, `${tag}.stand-in.log`))
  const standInUrl = (await standIn.waitFor(/listening on (http:\/\/\S+)/, 20_000))[1]!
  const logFile = join(logsDir, `${tag}.log`)
  const started = Date.now()
  // One after the other, so that only the first applies the migrations.
  const children: Array<ReturnType<typeof startNode>> = []
  const baseUrls: Array<string> = []
  const stopAll = (ms: number) => Promise.all(children.map((child) => child.stop(ms)))
  try {
    for (let instance = 0; instance < contender.instances; instance++) {
      const port = await freePort()
      const child = startNode(
        contender.script,
        [],
        {
          ...serviceEnv(databaseUrl, standInUrl, port),
          ...(contender.name.startsWith("steadfast") ? steadfastEnv : {}),
          ...extra.env
        },
        instance === 0 ? logFile : logFile.replace(/\.log$/, `.${instance + 1}.log`),
        settings.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : []
      )
      children.push(child)
      await child.waitFor(/Listening on/, 60_000)
      baseUrls.push(`http://127.0.0.1:${port}`)
    }
    const startupMs = Date.now() - started
    const pids = children.map((child) => child.pid)
    const baseUrl = baseUrls[0]!
    const common = {
      aborted: () => children.some((child) => child.process.exitCode !== null || child.process.signalCode !== null),
      baseUrls,
      secret: SECRET,
      standInUrl,
      concurrency: settings.concurrency,
      startShare: settings.startShare,
      stallTimeoutMs: 30_000
    }

    if (settings.warmup > 0) {
      const warm = await drive({
        ...common,
        updates: settings.warmup,
        chats: Math.min(100, settings.warmup),
        firstUpdateId: 1,
        firstChatId: 900_000,
        seed: 7,
        settleMs: 0
      })
      if (!warm.complete) say(`  ! warm-up incomplete: ${warm.lost} without a reply`)
    }
    if (scenario.delayMs > 0) {
      const response = await fetch(`${standInUrl}/__delay?ms=${scenario.delayMs}`, { method: "POST" })
      if (!response.ok) throw new Error(`stand-in refused the delay: ${response.status}`)
    }

    const rssAfterWarmupKb = pids.reduce((sum, pid) => sum + (statusKb(pid, "VmRSS") ?? 0), 0)
    const before = statements ? await statementSnapshot(admin, database) : new Map<string, StatementStat>()
    const rowsWrittenBefore = await rowVersionsWritten(admin, database)
    const monitor = startMonitor({
      pids,
      admin,
      database,
      healthUrl: contender.health ? `${baseUrl}/health` : undefined,
      benchPids: [standIn.pid, ...extra.benchPids]
    })
    const driver = await drive({
      ...common,
      updates: scenario.updates,
      chats: settings.chats,
      firstUpdateId: 1_000_000,
      firstChatId: 100_000,
      seed: 42 + round,
      settleMs: 1_000 + scenario.delayMs,
      log: say
    })
    const monitored = await monitor.stop()
    if (extra.afterDrive !== undefined) await extra.afterDrive()
    // Summed over the instances (each one's own peak).
    const peakRssKb = pids.every((pid) => statusKb(pid, "VmHWM") !== undefined)
      ? pids.reduce((sum, pid) => sum + statusKb(pid, "VmHWM")!, 0)
      : monitored.rssMaxKb
    const delta = statements ? statementDelta(before, await statementSnapshot(admin, database)) : []
    // The sampler's own queries run on the admin database, so everything here is the contender's.
    const totalCalls = delta.reduce((sum, s) => sum + s.calls, 0)
    const totalMs = delta.reduce((sum, s) => sum + s.totalMs, 0)
    const planMs = delta.reduce((sum, s) => sum + s.planMs, 0)
    const exit = (await stopAll(20_000)).join(",")
    await standIn.stop(5_000)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const xacts = await admin.query<{ n: string }>(
      "SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = $1",
      [database]
    )
    const transactions = Number(xacts.rows[0]?.n ?? NaN)
    const rowsWritten = (await rowVersionsWritten(admin, database)) - rowsWrittenBefore
    const profileFile = settings.profile ? readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile")) : undefined
    return {
      scenario: scenario.name,
      round,
      contender: contender.name,
      database,
      startupMs,
      driver,
      monitor: monitored,
      peakRssKb,
      rssAfterWarmupKb,
      statementsPerUpdate: statements ? totalCalls / scenario.updates : undefined,
      dbExecMsPerUpdate: statements ? totalMs / scenario.updates : undefined,
      dbPlanMsPerUpdate: statements ? planMs / scenario.updates : undefined,
      transactionsPerUpdate: Number.isNaN(transactions) ? undefined : transactions / (scenario.updates + settings.warmup),
      rowVersionsPerUpdate: rowsWritten / scenario.updates,
      statements: delta.map((s) => ({ ...s, query: s.query.replace(/\s+/g, " ").slice(0, 300) })),
      busyBefore,
      profile: profileFile === undefined ? undefined : join(profileDir, profileFile),
      exit,
      logFile,
      logProblems: problemLines(logFile).slice(0, 20)
    }
  } catch (error) {
    await stopAll(5_000)
    await standIn.stop(5_000)
    throw error
  }
}

/** Issue 5: a buyer's pre-checkout must be answered quickly whatever else the service is doing. */
const PRECHECKOUT_P99_TARGET_MS = 1_000

interface PreCheckoutRun {
  readonly database: string
  readonly startupMs: number
  readonly result: PreCheckoutResult
  readonly monitor: MonitorResult
  readonly busyBefore: number
  readonly exit: string
  readonly logFile: string
  readonly logProblems: ReadonlyArray<string>
}

// steadfast only: the grammY peer has no payments. Its own database, stand-in and process, as runOne.
const runPreCheckoutScenario = async (cluster: Awaited<ReturnType<typeof startCluster>>, admin: pg.Client): Promise<PreCheckoutRun> => {
  const database = "bench_precheckout_steadfast"
  const databaseUrl = await createDatabase(cluster.url("postgres"), database)
  const tag = "precheckout-steadfast"
  const busyBefore = settings.quietWaitSeconds > 0 ? await waitForQuiet(0.25, settings.quietWaitSeconds * 1000) : NaN
  if (busyBefore >= 0.25) say(`  ! the machine is busy (${Math.round(busyBefore * 100)}% CPU) with other work; figures will be noisy`)
  const standIn = startNode("bench/standIn.ts", ["--delay-ms", "0"], {}, join(logsDir, `${tag}.stand-in.log`))
  const standInUrl = (await standIn.waitFor(/listening on (http:\/\/\S+)/, 20_000))[1]!
  const port = await freePort()
  const logFile = join(logsDir, `${tag}.log`)
  const started = Date.now()
  // PAYMENT_SECRET is left unset (derived from BOT_TOKEN, as in a default deployment): the bench never
  // signs a payload itself, it takes each order's payload from the sendInvoice call steadfast made.
  const child = startNode("src/main.ts", [], { ...serviceEnv(databaseUrl, standInUrl, port), ...steadfastEnv }, logFile)
  try {
    await child.waitFor(/Listening on/, 60_000)
    const startupMs = Date.now() - started
    const baseUrl = `http://127.0.0.1:${port}`
    const aborted = () => child.process.exitCode !== null || child.process.signalCode !== null
    if (settings.warmup > 0) {
      const warm = await drive({
        aborted,
        baseUrls: [baseUrl],
        secret: SECRET,
        standInUrl,
        concurrency: settings.concurrency,
        startShare: settings.startShare,
        stallTimeoutMs: 30_000,
        updates: settings.warmup,
        chats: Math.min(100, settings.warmup),
        firstUpdateId: 1,
        firstChatId: 900_000,
        seed: 7,
        settleMs: 0
      })
      if (!warm.complete) say(`  ! warm-up incomplete: ${warm.lost} without a reply`)
    }
    const monitor = startMonitor({ pids: [child.pid], admin, database, healthUrl: `${baseUrl}/health`, benchPids: [standIn.pid] })
    const result = await runPreCheckout({
      baseUrl,
      secret: SECRET,
      standInUrl,
      healthUrl: `${baseUrl}/health`,
      concurrency: settings.concurrency,
      durationMs: settings.precheckout.seconds * 1000,
      backgroundRate: settings.precheckout.backgroundRate,
      queryRate: settings.precheckout.queryRate,
      chats: settings.chats,
      firstUpdateId: 1_000_000,
      firstChatId: 100_000,
      firstBuyerId: 7_000_000_000,
      answerWaitMs: 15_000,
      aborted,
      log: say
    })
    const monitored = await monitor.stop()
    const exit = await child.stop(20_000)
    await standIn.stop(5_000)
    return { database, startupMs, result, monitor: monitored, busyBefore, exit, logFile, logProblems: problemLines(logFile).slice(0, 20) }
  } catch (error) {
    await child.stop(5_000)
    await standIn.stop(5_000)
    throw error
  }
}

const preCheckoutMet = (r: PreCheckoutResult): boolean =>
  r.queries > 0 && r.notAnswered === 0 && r.answeredDeclined === 0 && r.latency.p99 < PRECHECKOUT_P99_TARGET_MS &&
  r.background.achievedPerSecond >= 0.95 * r.background.targetPerSecond

const preCheckoutSummary = (run: PreCheckoutRun): string => {
  const r = run.result
  const rows: Array<[string, string]> = [
    ["orders created via /buy credits_100 (invoices seen)", `${r.invoices}/${r.orders} in ${fmt(r.setupSeconds, 1)} s`],
    ["pre-checkout queries posted / acked 2xx", `${r.queries} / ${r.acked}`],
    ["answered ok:true", String(r.answeredOk)],
    ["answered ok:false", `${r.answeredDeclined}${r.answeredDeclined > 0 ? ` ${JSON.stringify(r.declined)}` : ""}`],
    ["not answered", String(r.notAnswered)],
    ["duplicate answers", String(r.duplicateAnswers)],
    ["ack → answer p50 (ms)", fmt(r.latency.p50, 0)],
    ["ack → answer p90 (ms)", fmt(r.latency.p90, 0)],
    ["ack → answer p99 (ms)", fmt(r.latency.p99, 0)],
    ["ack → answer max (ms)", fmt(r.latency.max, 0)],
    [
      "first send → answer p50 / p99 / max (ms)",
      `${fmt(r.sendToAnswer.p50, 0)} / ${fmt(r.sendToAnswer.p99, 0)} / ${fmt(r.sendToAnswer.max, 0)}`
    ],
    ["pre-checkout webhook ack p50 / p99 (ms)", `${fmt(r.queryAck.p50, 1)} / ${fmt(r.queryAck.p99, 1)}`],
    ["background updates/s: target / achieved (acked)", `${r.background.targetPerSecond} / ${fmt(r.background.achievedPerSecond, 1)}`],
    ["background updates acked / skipped (no free chat or connection)", `${r.background.acked} / ${r.background.deferred}`],
    ["background ack p50 / p99 (ms)", `${fmt(r.background.ack.p50, 1)} / ${fmt(r.background.ack.p99, 1)}`],
    ["replies (sendMessage) during load", String(r.background.repliesDuringLoad)],
    [
      "non-2xx webhook answers",
      `${Object.values(r.rejected).reduce((a, b) => a + b, 0)}${Object.keys(r.rejected).length > 0 ? ` ${JSON.stringify(r.rejected)}` : ""}`
    ],
    ["inbox backlog at end of load / after answers (/health)", `${r.backlogAtLoadEnd ?? "-"} / ${r.backlogAfterWait ?? "-"}`],
    ["peak inbox backlog during load (/health, every 0.5 s)", fmt(run.monitor.inboxPendingMax, 0)],
    ["process CPU during load (s) / machine busy (%)", `${fmt(run.monitor.cpuSeconds, 1)} / ${fmt(run.monitor.machineBusy * 100, 0)}`],
    ["load duration (s)", fmt(r.loadSeconds, 1)]
  ]
  return table(["metric", "steadfast"], rows)
}

const runHeader = [
  "run",
  "ack p50",
  "ack p99",
  "ack max",
  "ack/s",
  "e2e s",
  "e2e/s",
  "reply p50",
  "reply p99",
  "lost",
  "dup",
  "non-2xx",
  "pool used",
  "pg conns",
  "pg busy",
  "RSS MB",
  "CPU s",
  "DB CPU s",
  "stmts/upd",
  "busy %",
  "other CPU s"
]
const runRow = (r: RunResult): Array<string> => [
  `${r.contender} #${r.round}`,
  fmt(r.driver.ack.p50, 1),
  fmt(r.driver.ack.p99, 1),
  fmt(r.driver.ack.max, 0),
  fmt(r.driver.ackPerSecond),
  fmt(r.driver.e2eSeconds, 2) + (r.driver.complete ? "" : "!"),
  fmt(r.driver.e2ePerSecond),
  fmt(r.driver.reply.p50, 0),
  fmt(r.driver.reply.p99, 0),
  String(r.driver.lost),
  String(r.driver.duplicated),
  String(Object.values(r.driver.rejected).reduce((a, b) => a + b, 0)),
  r.monitor.poolUsedMax === undefined ? "-" : `${r.monitor.poolUsedMax}/${r.monitor.poolMax ?? "?"}`,
  String(r.monitor.pgConnectionsMax),
  String(r.monitor.pgBusyMax),
  fmt(r.peakRssKb / 1024, 0),
  fmt(r.monitor.cpuSeconds, 1),
  fmt(r.monitor.dbCpuSeconds, 1),
  fmt(r.statementsPerUpdate, 1),
  fmt(r.monitor.machineBusy * 100, 0),
  fmt(r.monitor.otherCpuSeconds, 1)
]

interface Metric {
  readonly label: string
  readonly get: (r: RunResult) => number | undefined
  readonly digits: number
  /** How rounds combine: the median, or the sum (for lost/duplicated). */
  readonly combine?: "sum"
}
const metrics: ReadonlyArray<Metric> = [
  { label: "webhook ack p50 (ms)", get: (r) => r.driver.ack.p50, digits: 1 },
  { label: "webhook ack p99 (ms)", get: (r) => r.driver.ack.p99, digits: 1 },
  { label: "ack throughput (updates/s)", get: (r) => r.driver.ackPerSecond, digits: 0 },
  { label: "end-to-end time (s)", get: (r) => r.driver.e2eSeconds, digits: 2 },
  { label: "end-to-end throughput (updates/s)", get: (r) => r.driver.e2ePerSecond, digits: 0 },
  { label: "update→reply p50 (ms)", get: (r) => r.driver.reply.p50, digits: 0 },
  { label: "update→reply p99 (ms)", get: (r) => r.driver.reply.p99, digits: 0 },
  { label: "lost replies (all rounds)", get: (r) => r.driver.lost, digits: 0, combine: "sum" },
  { label: "duplicated replies (all rounds)", get: (r) => r.driver.duplicated, digits: 0, combine: "sum" },
  {
    label: "non-2xx webhook answers (all rounds)",
    get: (r) => Object.values(r.driver.rejected).reduce((a, b) => a + b, 0),
    digits: 0,
    combine: "sum"
  },
  { label: "peak pool slots used (/health)", get: (r) => r.monitor.poolUsedMax, digits: 0 },
  { label: "/health response p99 under load (ms)", get: (r) => r.monitor.healthP99Ms, digits: 1 },
  { label: "/health response max under load (ms)", get: (r) => r.monitor.healthMaxMs, digits: 1 },
  { label: "peak DB connections (pg_stat_activity)", get: (r) => r.monitor.pgConnectionsMax, digits: 0 },
  { label: "peak busy DB connections", get: (r) => r.monitor.pgBusyMax, digits: 0 },
  { label: "peak RSS, VmHWM (MB)", get: (r) => r.peakRssKb / 1024, digits: 0 },
  { label: "process CPU during run (s)", get: (r) => r.monitor.cpuSeconds, digits: 1 },
  { label: "its DB backends' CPU (s)", get: (r) => r.monitor.dbCpuSeconds, digits: 1 },
  { label: "process CPU per update (ms)", get: (r) => (1000 * r.monitor.cpuSeconds) / r.driver.updates, digits: 2 },
  { label: "DB backend CPU per update (ms)", get: (r) => (1000 * r.monitor.dbCpuSeconds) / r.driver.updates, digits: 2 },
  { label: "machine busy during run (%)", get: (r) => 100 * r.monitor.machineBusy, digits: 0 },
  { label: "other CPU on the machine (s)", get: (r) => r.monitor.otherCpuSeconds, digits: 1 },
  { label: "SQL statements per update (excl. BEGIN/COMMIT)", get: (r) => r.statementsPerUpdate, digits: 1 },
  { label: "DB transactions per update", get: (r) => r.transactionsPerUpdate, digits: 1 },
  { label: "row versions written per update", get: (r) => r.rowVersionsPerUpdate, digits: 1 },
  { label: "DB execution time per update (ms)", get: (r) => r.dbExecMsPerUpdate, digits: 2 },
  { label: "DB planning time per update (ms)", get: (r) => r.dbPlanMsPerUpdate, digits: 2 }
]

/** Rows inserted, updated and deleted in `database` so far (PostgreSQL's cumulative statistics). */
const rowVersionsWritten = async (admin: pg.Client, database: string): Promise<number> => {
  const { rows } = await admin.query<{ n: string }>(
    "SELECT (tup_inserted + tup_updated + tup_deleted)::text AS n FROM pg_stat_database WHERE datname = $1",
    [database]
  )
  return Number(rows[0]?.n ?? 0)
}

const combine = (metric: Metric, runs: ReadonlyArray<RunResult>): number | undefined => {
  const values = runs.map(metric.get).filter((v): v is number => v !== undefined)
  if (values.length === 0) return undefined
  return metric.combine === "sum" ? values.reduce((a, b) => a + b, 0) : median(values)
}

interface Check {
  readonly scenario: Scenario["name"] | "precheckout" | "telemetry"
  readonly target: string
  readonly steadfast: number | undefined
  readonly peer: number | undefined
  readonly met: boolean | undefined
}

const checks = (results: ReadonlyArray<RunResult>): Array<Check> => {
  const pick = (scenario: Scenario["name"], name: ContenderName, get: (r: RunResult) => number) => {
    const values = results.filter((r) => r.scenario === scenario && r.contender === name).map(get)
    return values.length === 0 ? undefined : median(values)
  }
  const out: Array<Check> = []
  const compare = (scenario: Scenario["name"], target: string, get: (r: RunResult) => number, ok: (s: number, p: number) => boolean) => {
    const s = pick(scenario, "steadfast", get)
    const p = pick(scenario, "peer", get)
    out.push({ scenario, target, steadfast: s, peer: p, met: s === undefined || p === undefined ? undefined : ok(s, p) })
  }
  compare("fast-api", "end-to-end throughput ≥ peer's", (r) => r.driver.e2ePerSecond, (s, p) => s >= p)
  compare("fast-api", "webhook ack p99 ≤ peer's", (r) => r.driver.ack.p99, (s, p) => s <= p)
  compare("slow-api", "webhook ack p99 < 100 ms with a slow Bot API", (r) => r.driver.ack.p99, (s) => s < 100)
  compare("slow-api", "webhook ack p99 ≤ peer's (slow Bot API)", (r) => r.driver.ack.p99, (s, p) => s <= p)
  compare("slow-api", "end-to-end throughput ≥ peer's (slow Bot API)", (r) => r.driver.e2ePerSecond, (s, p) => s >= p)
  compare("fast-api", "peak RSS < 1.5 × peer's", (r) => r.peakRssKb / 1024, (s, p) => s < 1.5 * p)
  // The grammY adapter against the Effect handler, same service: the "steadfast" column is the adapter here.
  const effect = pick("fast-api", "steadfast", (r) => r.driver.e2ePerSecond)
  const grammy = pick("fast-api", "steadfast-grammy", (r) => r.driver.e2ePerSecond)
  out.push({
    scenario: "fast-api",
    target: "grammY-Composer fallback e2e throughput ≥ 0.9 × the Effect fallback's (peer column: Effect)",
    steadfast: grammy,
    peer: effect,
    met: grammy === undefined || effect === undefined ? undefined : grammy >= 0.9 * effect
  })
  const lossFree = (scenario: Scenario["name"]) => {
    const runs = results.filter((r) => r.scenario === scenario && r.contender === "steadfast")
    if (runs.length === 0) return
    const lost = runs.reduce((sum, r) => sum + r.driver.lost + r.driver.duplicated, 0)
    const peerRuns = results.filter((r) => r.scenario === scenario && r.contender === "peer")
    out.push({
      scenario,
      target: "no lost or duplicated replies",
      steadfast: lost,
      peer: peerRuns.reduce((sum, r) => sum + r.driver.lost + r.driver.duplicated, 0),
      met: lost === 0
    })
  }
  lossFree("fast-api")
  lossFree("slow-api")
  return out.filter((c) => c.steadfast !== undefined)
}

/** --telemetry: the largest share of end-to-end throughput exporting traces, metrics and logs may cost. */
const TELEMETRY_MIN_RATIO = 0.9

interface TelemetryRound {
  readonly round: number
  readonly off: RunResult
  readonly on: RunResult
  /** What the sink had received when the measured run ended (warm-up included), and once steadfast had exited. */
  readonly sinkAtRunEnd: SinkSnapshot
  readonly sink: SinkSnapshot
}

const sinkStats = async (url: string): Promise<SinkSnapshot> => {
  const response = await fetch(`${url}/__stats`)
  const body: unknown = await response.json()
  if (!isSinkSnapshot(body)) throw new Error(`the OTLP sink answered /__stats with ${JSON.stringify(body)}`)
  return body
}

const steadfastOff: Contender = { name: "steadfast", script: "src/main.ts", health: true, instances: 1 }
const steadfastOn: Contender = { name: "steadfast+otel", script: "src/main.ts", health: true, instances: 1 }

// Off then on, round after round, each on a fresh database, with a fresh sink for each "on" run.
const runTelemetry = async (
  cluster: Awaited<ReturnType<typeof startCluster>>,
  admin: pg.Client,
  statements: boolean,
  scenario: Scenario
): Promise<Array<TelemetryRound>> => {
  const rounds: Array<TelemetryRound> = []
  const report = (r: RunResult) => {
    for (const line of r.logProblems.slice(0, 5)) say(`  log: ${line.slice(0, 300)}`)
    if (r.logProblems.length > 5) say(`  log: … ${r.logProblems.length - 5} more warning/error line(s) in ${r.logFile}`)
  }
  for (let round = 1; round <= scenario.rounds; round++) {
    say(`-- telemetry round ${round}: steadfast (no OTEL_* variables)`)
    const off = await runOne(cluster, admin, statements, scenario, round, steadfastOff)
    report(off)
    say(`-- telemetry round ${round}: steadfast+otel (OTLP/HTTP to the bench's sink)`)
    const sink = startNode("bench/otlpSink.ts", [], {}, join(logsDir, `telemetry-${round}.otlp-sink.log`))
    try {
      const sinkUrl = (await sink.waitFor(/otlp sink listening on (http:\/\/\S+)/, 20_000))[1]!
      let atRunEnd: SinkSnapshot | undefined
      const on = await runOne(cluster, admin, statements, scenario, round, steadfastOn, {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl },
        benchPids: [sink.pid],
        afterDrive: async () => {
          atRunEnd = await sinkStats(sinkUrl)
        }
      })
      report(on)
      const total = await sinkStats(sinkUrl)
      rounds.push({ round, off, on, sinkAtRunEnd: atRunEnd ?? total, sink: total })
      say("")
      say(table(runHeader, [off, on].map(runRow)))
      say(
        `   OTLP sink: ${total.requests} request(s), ${fmt(total.bytes / 1024, 1)} kB in all; ${
          atRunEnd?.requests ?? "?"
        } request(s) by the end of the measured run`
      )
      say("")
    } finally {
      await sink.stop(5_000)
    }
  }
  return rounds
}

interface TelemetryMetric {
  readonly label: string
  readonly get: (r: RunResult) => number
  readonly digits: number
}
const telemetryMetrics: ReadonlyArray<TelemetryMetric> = [
  { label: "ack throughput (updates/s)", get: (r) => r.driver.ackPerSecond, digits: 0 },
  { label: "end-to-end throughput (updates/s)", get: (r) => r.driver.e2ePerSecond, digits: 0 },
  { label: "webhook ack p50 (ms)", get: (r) => r.driver.ack.p50, digits: 1 },
  { label: "webhook ack p99 (ms)", get: (r) => r.driver.ack.p99, digits: 1 },
  { label: "process CPU per update (ms)", get: (r) => (1000 * r.monitor.cpuSeconds) / r.driver.updates, digits: 2 },
  { label: "peak RSS, VmHWM (MB)", get: (r) => r.peakRssKb / 1024, digits: 0 },
  { label: "update→reply p99 (ms)", get: (r) => r.driver.reply.p99, digits: 0 }
]

const telemetryMedians = (rounds: ReadonlyArray<TelemetryRound>) =>
  telemetryMetrics.map((metric) => {
    const off = median(rounds.map((r) => metric.get(r.off)))
    const on = median(rounds.map((r) => metric.get(r.on)))
    return { metric: metric.label, digits: metric.digits, off, on, ratio: off !== 0 ? on / off : NaN }
  })

const sinkTotals = (snapshots: ReadonlyArray<SinkSnapshot>) =>
  Object.fromEntries(
    ["all", ...otlpPaths].map((path) => {
      const pick = (s: SinkSnapshot) => (path === "all" ? s : s.paths[path as (typeof otlpPaths)[number]])
      return [path, {
        requests: snapshots.reduce((sum, s) => sum + pick(s).requests, 0),
        bytes: snapshots.reduce((sum, s) => sum + pick(s).bytes, 0)
      }]
    })
  )

const telemetrySummary = (
  rounds: ReadonlyArray<TelemetryRound>,
  scenario: Scenario
): { readonly text: string; readonly check: Check; readonly json: unknown } => {
  const lines: Array<string> = []
  lines.push(`== summary telemetry (${scenario.title}; ${scenario.updates} updates; ${rounds.length} round(s), off/on alternating)`)
  const perRound = rounds.flatMap((
    r
  ) => [[r.off, undefined, undefined] as const, [r.on, r, r.on.driver.e2ePerSecond / r.off.driver.e2ePerSecond] as const])
  lines.push(table(
    [
      "round",
      "contender",
      "ack/s",
      "e2e/s",
      "e2e on/off",
      "ack p50",
      "ack p99",
      "CPU ms/upd",
      "RSS MB",
      "lost",
      "dup",
      "OTLP req (run/total)",
      "OTLP kB"
    ],
    perRound.map(([run, round, ratio]) => [
      `#${run.round}`,
      run.contender,
      fmt(run.driver.ackPerSecond),
      fmt(run.driver.e2ePerSecond) + (run.driver.complete ? "" : "!"),
      ratio === undefined ? "" : fmt(ratio, 3),
      fmt(run.driver.ack.p50, 1),
      fmt(run.driver.ack.p99, 1),
      fmt((1000 * run.monitor.cpuSeconds) / run.driver.updates, 2),
      fmt(run.peakRssKb / 1024, 0),
      String(run.driver.lost),
      String(run.driver.duplicated),
      round === undefined ? "-" : `${round.sinkAtRunEnd.requests}/${round.sink.requests}`,
      round === undefined ? "-" : fmt(round.sink.bytes / 1024, 1)
    ]),
    2
  ))
  lines.push("")
  const medians = telemetryMedians(rounds)
  lines.push(table(
    ["metric (median over rounds)", "steadfast", "steadfast+otel", "on/off"],
    medians.map((m) => [m.metric, fmt(m.off, m.digits), fmt(m.on, m.digits), fmt(m.ratio, 3)])
  ))
  const totals = sinkTotals(rounds.map((r) => r.sink))
  const atRunEnd = sinkTotals(rounds.map((r) => r.sinkAtRunEnd))
  lines.push("")
  lines.push("OTLP sink (all steadfast+otel runs; warm-up, run and the flush at shutdown):")
  for (const path of ["all", ...otlpPaths]) {
    const t = totals[path]!
    lines.push(
      `  ${path.padEnd(12)} ${pad(String(t.requests), 6)} request(s) ${
        pad(fmt(t.bytes / 1024, 1), 10)
      } kB   (by the end of the measured runs: ${atRunEnd[path]!.requests} request(s), ${fmt(atRunEnd[path]!.bytes / 1024, 1)} kB)`
    )
  }
  const other = rounds.reduce((sum, r) => sum + r.sink.other, 0)
  if (other > 0) lines.push(`  ! ${other} request(s) to other paths (answered 404)`)
  const exported = totals["all"]!.requests > 0
  if (!exported) lines.push("  ! the sink received nothing: steadfast+otel did not export, the comparison says nothing about telemetry")
  const e2e = medians.find((m) => m.metric === "end-to-end throughput (updates/s)")!
  const check: Check = {
    scenario: "telemetry",
    target: `telemetry throughput cost < ${Math.round((1 - TELEMETRY_MIN_RATIO) * 100)}% (median e2e/s on/off ≥ ${
      TELEMETRY_MIN_RATIO.toFixed(2)
    }, export seen)`,
    steadfast: e2e.ratio,
    peer: undefined,
    met: exported && e2e.ratio >= TELEMETRY_MIN_RATIO
  }
  const json = {
    contenders: { off: "steadfast (no OTEL_* variables)", on: "steadfast+otel (OTEL_EXPORTER_OTLP_ENDPOINT = bench/otlpSink.ts)" },
    scenario: scenario.name,
    updates: scenario.updates,
    rounds: rounds.map((r) => ({
      round: r.round,
      offDatabase: r.off.database,
      onDatabase: r.on.database,
      e2eRatio: r.on.driver.e2ePerSecond / r.off.driver.e2ePerSecond,
      metrics: telemetryMetrics.map((m) => ({ metric: m.label, off: m.get(r.off), on: m.get(r.on) })),
      sinkAtRunEnd: r.sinkAtRunEnd,
      sink: r.sink
    })),
    medians: medians.map(({ digits: _digits, ...m }) => ({ ...m, ratio: Number.isNaN(m.ratio) ? null : m.ratio })),
    sink: { total: totals, byRunEnd: atRunEnd, otherPaths: other },
    target: { minRatio: TELEMETRY_MIN_RATIO, ratio: e2e.ratio, exported, met: check.met },
    runs: rounds.flatMap((r) => [r.off, r.on])
  }
  return { text: lines.join("\n"), check, json }
}

const git = (() => {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root }).toString().trim()
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: root }).toString().split("\n").filter((l) =>
      l !== ""
    ).length
    return { head, dirtySrcFiles: dirty }
  } catch {
    return { head: "unknown", dirtySrcFiles: 0 }
  }
})()

const main = async () => {
  say(
    `steadfast bench: ${cpus().length} CPU(s) (${cpus()[0]?.model ?? "?"}), ${Math.round(totalmem() / 2 ** 30)} GB, node ${process.version}`
  )
  say(
    `code: HEAD ${git.head}${
      git.dirtySrcFiles > 0 ? ` + ${git.dirtySrcFiles} uncommitted file(s) under src/ (the working tree is what runs)` : ""
    }`
  )
  say(`settings: ${JSON.stringify(settings)}`)
  say([
    "notes:",
    `  - steadfast runs with SEND_RATE_PER_SECOND=${settings.sendRatePerSecond}: Telegram's global limit (default 30/s) would otherwise cap its sender,`,
    "    and the peer has no limiter at all; everything else is steadfast's default configuration (DB_POOL_MAX=10).",
    "  - one embedded PostgreSQL for the run (fsync=off, synchronous_commit=off, as in the tests), a fresh database per run;",
    "    the Bot API stand-in (bench/standIn.ts) is a separate process; driver, contender, stand-in and PostgreSQL share the CPUs.",
    "  - the peer (bench/peer/grammyPeer.ts) answers the webhook after its handler (upsert user + reply); steadfast answers once the",
    "    update is stored. steadfast's fallback handler does not upsert the user, the peer's does (as specified for the peer).",
    "  - 'busy %' is the whole machine's CPU share during a run; 'other CPU s' is CPU nobody in this run used (PostgreSQL's",
    "    background processes, or other work on the machine): when it is large, that run's figures are noisy."
  ].join("\n"))

  const cluster = await startCluster()
  const admin = new pg.Client({ connectionString: cluster.url("postgres") })
  let statements = false
  const results: Array<RunResult> = []
  const stopAll = () => {
    cluster.dispose().finally(() => process.exit(130))
  }
  process.once("SIGINT", stopAll)
  process.once("SIGTERM", stopAll)
  try {
    // pg_stat_statements counts the statements (round trips) each contender makes per update.
    try {
      const setup = new pg.Client({ connectionString: cluster.url("postgres") })
      await setup.connect()
      await setup.query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
      await setup.query("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
      await setup.end()
      await cluster.stop()
      await cluster.start()
      await admin.connect()
      await admin.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
      statements = true
    } catch (error) {
      say(`  ! pg_stat_statements unavailable (${error instanceof Error ? error.message : String(error)}); no statement counts`)
      if (!statements) await admin.connect().catch(() => undefined)
    }
    say(`PostgreSQL on port ${cluster.port}; logs of every process under bench/results/logs/\n`)

    for (const scenario of scenarios) {
      say(
        `== ${scenario.name}: ${scenario.title}; ${scenario.updates} updates over ${
          Math.min(settings.chats, scenario.updates)
        } chats, ${scenario.rounds} round(s)`
      )
      for (let round = 1; round <= scenario.rounds; round++) {
        const roundResults: Array<RunResult> = []
        for (const contender of contenders) {
          say(`-- ${scenario.name} round ${round}: ${contender.name}`)
          const result = await runOne(cluster, admin, statements, scenario, round, contender)
          results.push(result)
          roundResults.push(result)
          for (const line of result.logProblems.slice(0, 5)) say(`  log: ${line.slice(0, 300)}`)
          if (result.logProblems.length > 5) {
            say(`  log: … ${result.logProblems.length - 5} more warning/error line(s) in ${result.logFile}`)
          }
        }
        say("")
        say(table(runHeader, roundResults.map(runRow)))
        say("")
      }
    }

    for (const scenario of scenarios) {
      const runsOf = (name: ContenderName) => results.filter((r) => r.scenario === scenario.name && r.contender === name)
      const peer = runsOf("peer")
      const steadfast = runsOf("steadfast")
      const grammy = runsOf("steadfast-grammy")
      const two = runsOf("steadfast-x2")
      const ratioOf = (a: number | undefined, b: number | undefined, combined: string | undefined) =>
        a !== undefined && b !== undefined && b !== 0 && combined !== "sum" ? fmt(a / b, 2) : "-"
      say(`== summary ${scenario.name} (${scenario.title}; ${scenario.updates} updates; medians over ${scenario.rounds} round(s))`)
      say(table(
        [
          "metric",
          "peer",
          "steadfast",
          "steadfast/peer",
          "steadfast-grammy",
          "grammy/steadfast",
          ...(two.length > 0 ? ["steadfast-x2", "x2/steadfast"] : [])
        ],
        metrics.map((metric) => {
          const p = combine(metric, peer)
          const s = combine(metric, steadfast)
          const g = combine(metric, grammy)
          const t = combine(metric, two)
          return [
            metric.label,
            fmt(p, metric.digits),
            fmt(s, metric.digits),
            ratioOf(s, p, metric.combine),
            fmt(g, metric.digits),
            ratioOf(g, s, metric.combine),
            ...(two.length > 0 ? [fmt(t, metric.digits), ratioOf(t, s, metric.combine)] : [])
          ]
        })
      ))
      const top = (steadfast[0]?.statements ?? []).slice(0, 14)
      if (top.length > 0) {
        say(`steadfast's SQL statements per update (round 1; calls per update × mean execution time):`)
        for (const s of top) {
          say(
            `  ${fmt(s.calls / scenario.updates, 2).padStart(6)} × ${fmt(s.totalMs / s.calls, 3).padStart(7)} ms  ${s.query.slice(0, 110)}`
          )
        }
      }
      say("")
    }

    if (settings.profile) {
      for (const r of results) {
        if (r.profile === undefined) continue
        say(`== profile ${r.scenario} #${r.round} ${r.contender} (whole process life: start-up, warm-up, run)`)
        say(summarizeProfile(r.profile, 30))
        say("")
      }
    }

    let telemetry: { readonly text: string; readonly check: Check; readonly json: unknown } | undefined
    if (telemetryMode) {
      const scenario = allScenarios[0]!
      say(
        `== telemetry: ${scenario.title}; ${scenario.updates} updates over ${
          Math.min(settings.chats, scenario.updates)
        } chats, ${settings.rounds} round(s) of steadfast off/on`
      )
      say("   steadfast+otel: OTEL_EXPORTER_OTLP_ENDPOINT at a local sink (bench/otlpSink.ts, a separate process, counted as bench CPU);")
      say("   traces, metrics and logs on, everything else (batching, 10 s metric interval) at its defaults")
      telemetry = telemetrySummary(await runTelemetry(cluster, admin, statements, scenario), scenario)
      say(telemetry.text)
      say("")
    }

    let preCheckout: PreCheckoutRun | undefined
    if (settings.precheckout.enabled) {
      const p = settings.precheckout
      say(
        `== precheckout: pre-checkout answer latency, ${p.queryRate} queries/s for real orders while ${p.backgroundRate} other updates/s arrive; ${p.seconds} s; steadfast only`
      )
      preCheckout = await runPreCheckoutScenario(cluster, admin)
      for (const line of preCheckout.logProblems.slice(0, 5)) say(`  log: ${line.slice(0, 300)}`)
      if (preCheckout.logProblems.length > 5) {
        say(`  log: … ${preCheckout.logProblems.length - 5} more warning/error line(s) in ${preCheckout.logFile}`)
      }
      say("")
      say(`== summary precheckout (latency: webhook 2xx ack of the pre_checkout_query update → answerPreCheckoutQuery at the stand-in;`)
      say(`   both read with Date.now() on this machine, the ack in the bench process, the arrival in the stand-in process)`)
      say(preCheckoutSummary(preCheckout))
      say("")
    }

    const verdicts = checks(results)
    if (preCheckout !== undefined) {
      verdicts.push({
        scenario: "precheckout",
        target:
          `pre-checkout answer p99 < ${PRECHECKOUT_P99_TARGET_MS} ms at ${settings.precheckout.backgroundRate} other updates/s (all answered ok, rate held)`,
        steadfast: preCheckout.result.latency.p99,
        peer: undefined,
        met: preCheckoutMet(preCheckout.result)
      })
    }
    if (telemetry !== undefined) {
      verdicts.push(telemetry.check)
    }
    say("== targets")
    say(table(
      ["scenario", "target", "peer", "steadfast", "met"],
      verdicts.map((
        c
      ) => [
        c.scenario,
        c.target,
        fmt(c.peer, 1),
        fmt(c.steadfast, c.scenario === "telemetry" ? 3 : 1),
        c.met === undefined ? "-" : c.met ? "yes" : "NO"
      ]),
      2
    ))

    const report = {
      finishedAt: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version },
      git,
      settings,
      scenarios,
      results,
      summary: scenarios.map((scenario) => ({
        scenario: scenario.name,
        metrics: metrics.map((metric) => {
          const p = combine(metric, results.filter((r) => r.scenario === scenario.name && r.contender === "peer"))
          const s = combine(metric, results.filter((r) => r.scenario === scenario.name && r.contender === "steadfast"))
          return {
            metric: metric.label,
            peer: p ?? null,
            steadfast: s ?? null,
            ratio: p !== undefined && s !== undefined && p !== 0 ? s / p : null
          }
        })
      })),
      targets: verdicts,
      telemetry: telemetry === undefined ? null : telemetry.json,
      precheckout: preCheckout === undefined ? null : {
        ...preCheckout,
        targetP99Ms: PRECHECKOUT_P99_TARGET_MS,
        met: preCheckoutMet(preCheckout.result)
      }
    }
    const json = JSON.stringify(report, null, 2)
    const stamped = `run-${report.finishedAt.replace(/[:.]/g, "-")}.json`
    writeFileSync(join(resultsDir, "latest.json"), json)
    writeFileSync(join(resultsDir, stamped), json)
    say(`\nresults: bench/results/latest.json (and bench/results/${stamped})`)
  } finally {
    await admin.end().catch(() => undefined)
    await cluster.dispose()
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? error.stack ?? error.message : String(error))
    process.exit(1)
  }
)
