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
import { renderReport, type ReportTable, writeReport } from "./report.ts"

const usage = `usage: npm run bench -- [options]
  --updates N           updates per run with the fast Bot API (default 5000)
  --chats N             distinct chats (default 500)
  --rounds R            runs per contender with the fast Bot API (default 3)
  --delayed-updates N   updates per run with the slow Bot API (default 600)
  --delayed-rounds R    runs per contender with the slow Bot API (default 1)
  --delay-ms MS         the slow Bot API's delay per call (default 2000)
  --concurrency C       webhook connections at once, Telegram's max_connections (default 40)
  --warmup N            updates sent (and answered) before each measured run (default 300)
  --skip-delayed        leave the slow Bot API scenario out
  --paced-rate N        the paced scenario's updates per second, for reply latency at a steady load (default 200)
  --paced-seconds S     the paced scenario's duration per run (default 15; 5 with --quick)
  --skip-paced          leave the paced scenario out
  --quick               smoke run: 1000 updates, 1 round, 300 delayed updates, 100 warm-up, 5 s paced
  --profile             run both contenders under node --cpu-prof and print where their CPU went
                        (profiling slows them down: do not compare these figures with normal runs)
  --only NAME           run one contender only: peer, steadfast, steadfast-grammy or steadfast-x2 (no ratios then)
  --skip-scaling        leave out steadfast-x2: two steadfast instances on one database, the driver posting to
                        them round robin (CPU and RSS are the two processes' sums), run by default with the
                        fast and the slow Bot API (--scaling is accepted and changes nothing)
  --steadfast-env K=V   extra environment for steadfast (repeatable), e.g. --steadfast-env DB_POOL_MAX=20
  --only-precheckout    run the pre-checkout scenario alone (steadfast only)
  --skip-precheckout    leave the pre-checkout scenario out
  --precheckout-seconds S  load duration of the pre-checkout scenario (default 30; 10 with --quick)
  --precheckout-rate N  pre-checkout queries per second, one order each (default 5)
  --background-rate N   ordinary updates per second during the pre-checkout scenario (default 200)
  --telemetry           telemetry overhead instead of the usual scenarios: steadfast without OTEL_* variables against
                        "steadfast+otel" exporting traces, metrics and logs (OTLP/protobuf, every trace) to a local
                        OTLP/HTTP sink the bench starts (bench/otlpSink.ts), and "steadfast+otel@10%" (the same with
                        OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG 0.1), alternating for --rounds rounds on the
                        fast Bot API; no peer, no slow Bot API, no paced or pre-checkout scenario
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
    "paced-rate": { type: "string" },
    "paced-seconds": { type: "string" },
    "skip-paced": { type: "boolean", default: false },
    "skip-scaling": { type: "boolean", default: false },
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
  pacedRate: positive("paced-rate", values["paced-rate"], 200),
  pacedSeconds: positive("paced-seconds", values["paced-seconds"], quick ? 5 : 15),
  pacedRounds: values["skip-paced"] ? 0 : positive("rounds", values.rounds, quick ? 1 : 3),
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
type RunLabel = ContenderName | "steadfast+otel" | "steadfast+otel@10%"
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
  // Two instances sharing one database (left out with --skip-scaling): how throughput scales from one to two.
  { name: "steadfast-x2", script: "src/main.ts", health: true, instances: 2 }
]
if (values.only !== undefined && !allContenders.some((c) => c.name === values.only)) {
  console.error(`--only must be peer, steadfast, steadfast-grammy or steadfast-x2\n${usage}`)
  process.exit(2)
}
const contenders = allContenders.filter((c) =>
  values.only === undefined ? c.name !== "steadfast-x2" || !values["skip-scaling"] : c.name === values.only
)

interface Scenario {
  readonly name: "fast-api" | "slow-api" | "paced"
  readonly title: string
  readonly updates: number
  readonly rounds: number
  readonly delayMs: number
  /** Paced load (updates per second); unset: as fast as the service takes them. */
  readonly ratePerSecond?: number
}
const allScenarios: ReadonlyArray<Scenario> = [
  { name: "fast-api", title: "Bot API answers at once", updates: settings.updates, rounds: settings.rounds, delayMs: 0 },
  {
    name: "slow-api",
    title: `Bot API takes ${settings.delayMs} ms per call`,
    updates: settings.delayedUpdates,
    rounds: settings.delayedRounds,
    delayMs: settings.delayMs
  },
  {
    name: "paced",
    title: `${settings.pacedRate} updates/s, paced, Bot API answers at once`,
    updates: settings.pacedRate * settings.pacedSeconds,
    rounds: settings.pacedRounds,
    delayMs: 0,
    ratePerSecond: settings.pacedRate
  }
]
/** Two instances are about throughput: the paced scenario leaves them out. */
const contendersOf = (scenario: Scenario) => contenders.filter((c) => scenario.name !== "paced" || c.name !== "steadfast-x2")
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
      log: say,
      ...(scenario.ratePerSecond === undefined ? {} : { ratePerSecond: scenario.ratePerSecond })
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
  compare(
    "fast-api",
    "Node CPU per update ≤ 1.2 × peer's (ms)",
    (r) => (1000 * r.monitor.cpuSeconds) / r.driver.updates,
    (s, p) => s <= 1.2 * p
  )
  compare("fast-api", "PostgreSQL CPU per update ≤ 1.2 × peer's (ms)", (r) => (1000 * r.monitor.dbCpuSeconds) / r.driver.updates, (
    s,
    p
  ) => s <= 1.2 * p)
  compare("paced", "reply latency p50 ≤ 2 × peer's (ms)", (r) => r.driver.reply.p50, (s, p) => s <= 2 * p)
  compare("paced", "reply latency p99 ≤ 2 × peer's (ms)", (r) => r.driver.reply.p99, (s, p) => s <= 2 * p)
  const rowVersions = pick("fast-api", "steadfast", (r) => r.rowVersionsPerUpdate)
  out.push({
    scenario: "fast-api",
    target: "row versions written per update ≤ 3",
    steadfast: rowVersions,
    peer: pick("fast-api", "peer", (r) => r.rowVersionsPerUpdate),
    met: rowVersions === undefined ? undefined : rowVersions <= 3
  })
  // Two instances against one, same service: the "peer" column is one instance here.
  const one = pick("fast-api", "steadfast", (r) => r.driver.e2ePerSecond)
  const two = pick("fast-api", "steadfast-x2", (r) => r.driver.e2ePerSecond)
  out.push({
    scenario: "fast-api",
    target: "two instances e2e throughput ≥ 0.9 × one instance's (peer column: one instance)",
    steadfast: two,
    peer: one,
    met: one === undefined || two === undefined ? undefined : two >= 0.9 * one
  })
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
  lossFree("paced")
  return out.filter((c) => c.steadfast !== undefined)
}

/** Issue 22's targets for --telemetry, as ratios of the medians against steadfast without export. */
const TELEMETRY_TARGETS = { e2eMin: 0.9, cpuMax: 1.15, rssMax: 1.15, sampledE2eMin: 0.97 } as const
const SAMPLED_RATIO = "0.1"

/** One exporting run and what the sink had received at the end of the measured run and in all. */
interface ExportingRun {
  readonly run: RunResult
  readonly sinkAtRunEnd: SinkSnapshot
  readonly sink: SinkSnapshot
}

interface TelemetryRound {
  readonly round: number
  readonly off: RunResult
  readonly on: ExportingRun
  readonly sampled: ExportingRun
}

const sinkStats = async (url: string): Promise<SinkSnapshot> => {
  const response = await fetch(`${url}/__stats`)
  const body: unknown = await response.json()
  if (!isSinkSnapshot(body)) throw new Error(`the OTLP sink answered /__stats with ${JSON.stringify(body)}`)
  return body
}

const steadfastOff: Contender = { name: "steadfast", script: "src/main.ts", health: true, instances: 1 }
const steadfastOn: Contender = { name: "steadfast+otel", script: "src/main.ts", health: true, instances: 1 }
const steadfastSampled: Contender = { name: "steadfast+otel@10%", script: "src/main.ts", health: true, instances: 1 }

// Off, on, on at 10%, round after round, each on a fresh database, with a fresh sink for each exporting run.
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
  const exporting = async (round: number, contender: Contender, env: Record<string, string>): Promise<ExportingRun> => {
    say(`-- telemetry round ${round}: ${contender.name} (OTLP/protobuf to the bench's sink)`)
    const slug = contender.name.replace(/\W/g, "_")
    const sink = startNode("bench/otlpSink.ts", [], {}, join(logsDir, `telemetry-${round}-${slug}.otlp-sink.log`))
    try {
      const sinkUrl = (await sink.waitFor(/otlp sink listening on (http:\/\/\S+)/, 20_000))[1]!
      let atRunEnd: SinkSnapshot | undefined
      const run = await runOne(cluster, admin, statements, scenario, round, contender, {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl, ...env },
        benchPids: [sink.pid],
        afterDrive: async () => {
          atRunEnd = await sinkStats(sinkUrl)
        }
      })
      report(run)
      const total = await sinkStats(sinkUrl)
      return { run, sinkAtRunEnd: atRunEnd ?? total, sink: total }
    } finally {
      await sink.stop(5_000)
    }
  }
  for (let round = 1; round <= scenario.rounds; round++) {
    say(`-- telemetry round ${round}: steadfast (no OTEL_* variables)`)
    const off = await runOne(cluster, admin, statements, scenario, round, steadfastOff)
    report(off)
    const on = await exporting(round, steadfastOn, {})
    const sampled = await exporting(round, steadfastSampled, {
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: SAMPLED_RATIO
    })
    rounds.push({ round, off, on, sampled })
    say("")
    say(table(runHeader, [off, on.run, sampled.run].map(runRow)))
    for (const e of [on, sampled]) {
      say(
        `   OTLP sink (${e.run.contender}): ${e.sink.requests} request(s), ${
          fmt(e.sink.bytes / 1024, 1)
        } kB in all; ${e.sinkAtRunEnd.requests} request(s) by the end of the measured run`
      )
    }
    say("")
  }
  return rounds
}

interface TelemetryMetric {
  readonly label: string
  readonly get: (r: RunResult) => number
  readonly digits: number
}
const cpuPerUpdate = (r: RunResult) => (1000 * r.monitor.cpuSeconds) / r.driver.updates
const peakRssMb = (r: RunResult) => r.peakRssKb / 1024
const telemetryMetrics: ReadonlyArray<TelemetryMetric> = [
  { label: "ack throughput (updates/s)", get: (r) => r.driver.ackPerSecond, digits: 0 },
  { label: "end-to-end throughput (updates/s)", get: (r) => r.driver.e2ePerSecond, digits: 0 },
  { label: "webhook ack p50 (ms)", get: (r) => r.driver.ack.p50, digits: 1 },
  { label: "webhook ack p99 (ms)", get: (r) => r.driver.ack.p99, digits: 1 },
  { label: "Node CPU per update (ms)", get: cpuPerUpdate, digits: 2 },
  { label: "PostgreSQL CPU per update (ms)", get: (r) => (1000 * r.monitor.dbCpuSeconds) / r.driver.updates, digits: 2 },
  { label: "peak RSS, VmHWM (MB)", get: peakRssMb, digits: 0 },
  { label: "update→reply p99 (ms)", get: (r) => r.driver.reply.p99, digits: 0 }
]

const telemetryMedians = (rounds: ReadonlyArray<TelemetryRound>) =>
  telemetryMetrics.map((metric) => {
    const off = median(rounds.map((r) => metric.get(r.off)))
    const on = median(rounds.map((r) => metric.get(r.on.run)))
    const sampled = median(rounds.map((r) => metric.get(r.sampled.run)))
    return {
      metric: metric.label,
      digits: metric.digits,
      off,
      on,
      ratio: off !== 0 ? on / off : NaN,
      sampled,
      sampledRatio: off !== 0 ? sampled / off : NaN
    }
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

interface TelemetrySummary {
  readonly text: string
  readonly checks: ReadonlyArray<Check>
  readonly medians: ReturnType<typeof telemetryMedians>
  readonly json: unknown
}

const telemetrySummary = (rounds: ReadonlyArray<TelemetryRound>, scenario: Scenario): TelemetrySummary => {
  const lines: Array<string> = []
  lines.push(
    `== summary telemetry (${scenario.title}; ${scenario.updates} updates; ${rounds.length} round(s), off / on / on at 10% alternating)`
  )
  const perRound = rounds.flatMap((r) => [
    [r.off, undefined, undefined] as const,
    [r.on.run, r.on, r.on.run.driver.e2ePerSecond / r.off.driver.e2ePerSecond] as const,
    [r.sampled.run, r.sampled, r.sampled.run.driver.e2ePerSecond / r.off.driver.e2ePerSecond] as const
  ])
  lines.push(table(
    [
      "round",
      "contender",
      "ack/s",
      "e2e/s",
      "e2e ÷ off",
      "ack p50",
      "ack p99",
      "CPU ms/upd",
      "RSS MB",
      "lost",
      "dup",
      "OTLP req (run/total)",
      "OTLP kB"
    ],
    perRound.map(([run, exporting, ratio]) => [
      `#${run.round}`,
      run.contender,
      fmt(run.driver.ackPerSecond),
      fmt(run.driver.e2ePerSecond) + (run.driver.complete ? "" : "!"),
      ratio === undefined ? "" : fmt(ratio, 3),
      fmt(run.driver.ack.p50, 1),
      fmt(run.driver.ack.p99, 1),
      fmt(cpuPerUpdate(run), 2),
      fmt(peakRssMb(run), 0),
      String(run.driver.lost),
      String(run.driver.duplicated),
      exporting === undefined ? "-" : `${exporting.sinkAtRunEnd.requests}/${exporting.sink.requests}`,
      exporting === undefined ? "-" : fmt(exporting.sink.bytes / 1024, 1)
    ]),
    2
  ))
  lines.push("")
  const medians = telemetryMedians(rounds)
  lines.push(table(
    ["metric (median over rounds)", "steadfast", "steadfast+otel", "÷ off", "steadfast+otel@10%", "÷ off"],
    medians.map((
      m
    ) => [m.metric, fmt(m.off, m.digits), fmt(m.on, m.digits), fmt(m.ratio, 3), fmt(m.sampled, m.digits), fmt(m.sampledRatio, 3)])
  ))
  const totals = { on: sinkTotals(rounds.map((r) => r.on.sink)), sampled: sinkTotals(rounds.map((r) => r.sampled.sink)) }
  lines.push("")
  lines.push("OTLP sink (warm-up, run and the flush at shutdown, all rounds): requests / kB")
  for (const path of ["all", ...otlpPaths]) {
    const on = totals.on[path]!
    const sampled = totals.sampled[path]!
    lines.push(
      `  ${path.padEnd(12)} steadfast+otel ${pad(String(on.requests), 6)} / ${pad(fmt(on.bytes / 1024, 1), 10)}   steadfast+otel@10% ${
        pad(String(sampled.requests), 6)
      } / ${pad(fmt(sampled.bytes / 1024, 1), 10)}`
    )
  }
  const other = rounds.reduce((sum, r) => sum + r.on.sink.other + r.sampled.sink.other, 0)
  if (other > 0) lines.push(`  ! ${other} request(s) to other paths (answered 404)`)
  const exported = totals.on["all"]!.requests > 0 && totals.sampled["all"]!.requests > 0
  if (!exported) lines.push("  ! a sink received nothing: an exporting run did not export, the comparison says nothing about telemetry")
  const byLabel = (label: string) => medians.find((m) => m.metric === label)!
  const e2e = byLabel("end-to-end throughput (updates/s)")
  const cpu = byLabel("Node CPU per update (ms)")
  const rss = byLabel("peak RSS, VmHWM (MB)")
  const check = (target: string, value: number, met: boolean): Check => ({
    scenario: "telemetry",
    target,
    steadfast: value,
    peer: undefined,
    met: exported && met
  })
  const t = TELEMETRY_TARGETS
  const checks = [
    check(`every trace exported: e2e throughput ≥ ${t.e2eMin} × without export`, e2e.ratio, e2e.ratio >= t.e2eMin),
    check(`every trace exported: Node CPU per update ≤ ${t.cpuMax} × without export`, cpu.ratio, cpu.ratio <= t.cpuMax),
    check(`every trace exported: peak RSS ≤ ${t.rssMax} × without export`, rss.ratio, rss.ratio <= t.rssMax),
    check(`10% of traces: e2e throughput ≥ ${t.sampledE2eMin} × without export`, e2e.sampledRatio, e2e.sampledRatio >= t.sampledE2eMin)
  ]
  const json = {
    contenders: {
      off: "steadfast (no OTEL_* variables)",
      on: "steadfast+otel (OTEL_EXPORTER_OTLP_ENDPOINT = bench/otlpSink.ts)",
      sampled: `steadfast+otel@10% (the same, OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=${SAMPLED_RATIO})`
    },
    scenario: scenario.name,
    updates: scenario.updates,
    rounds: rounds.map((r) => ({
      round: r.round,
      databases: [r.off.database, r.on.run.database, r.sampled.run.database],
      e2eRatio: r.on.run.driver.e2ePerSecond / r.off.driver.e2ePerSecond,
      sampledE2eRatio: r.sampled.run.driver.e2ePerSecond / r.off.driver.e2ePerSecond,
      metrics: telemetryMetrics.map((m) => ({ metric: m.label, off: m.get(r.off), on: m.get(r.on.run), sampled: m.get(r.sampled.run) })),
      sink: { on: r.on.sink, onAtRunEnd: r.on.sinkAtRunEnd, sampled: r.sampled.sink, sampledAtRunEnd: r.sampled.sinkAtRunEnd }
    })),
    medians: medians.map(({ digits: _digits, ...m }) => ({
      ...m,
      ratio: Number.isNaN(m.ratio) ? null : m.ratio,
      sampledRatio: Number.isNaN(m.sampledRatio) ? null : m.sampledRatio
    })),
    sink: { ...totals, otherPaths: other },
    targets: checks,
    runs: rounds.flatMap((r) => [r.off, r.on.run, r.sampled.run])
  }
  return { text: lines.join("\n"), checks, medians, json }
}

const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`

/** The run as markdown tables: one per scenario (medians, ratios), telemetry, pre-checkout, targets. */
const markdownReport = (
  finishedAt: string,
  results: ReadonlyArray<RunResult>,
  verdicts: ReadonlyArray<Check>,
  telemetry: TelemetrySummary | undefined,
  preCheckout: PreCheckoutRun | undefined
): Parameters<typeof renderReport>[0] => {
  const tables: Array<ReportTable> = []
  for (const scenario of scenarios) {
    const runsOf = (name: ContenderName) => results.filter((r) => r.scenario === scenario.name && r.contender === name)
    const present = contenders.filter((c) => runsOf(c.name).length > 0).map((c) => c.name)
    const peer = runsOf("peer")
    const steadfast = runsOf("steadfast")
    // steadfast against the peer; its variants (grammY Composer, two instances) against steadfast.
    const baseOf = (name: ContenderName): ContenderName | undefined =>
      name === "peer"
        ? undefined
        : name === "steadfast"
        ? (peer.length > 0 ? "peer" : undefined)
        : steadfast.length > 0
        ? "steadfast"
        : undefined
    const header = [
      "metric",
      ...present.flatMap((name) => {
        const base = baseOf(name)
        return base === undefined ? [name] : [name, `${name} ÷ ${base}`]
      })
    ]
    tables.push({
      title: `${scenario.name}: ${scenario.title}`,
      note: `${scenario.updates} updates over ${
        Math.min(settings.chats, scenario.updates)
      } chats; medians of ${scenario.rounds} alternating round(s).`,
      header,
      rows: metrics.map((metric) => {
        return [
          metric.label,
          ...present.flatMap((name) => {
            const value = combine(metric, runsOf(name))
            const baseName = baseOf(name)
            if (baseName === undefined) return [fmt(value, metric.digits)]
            const base = combine(metric, runsOf(baseName))
            const ratio = value !== undefined && base !== undefined && base !== 0 && metric.combine !== "sum" ? fmt(value / base, 2) : "-"
            return [fmt(value, metric.digits), ratio]
          })
        ]
      })
    })
  }
  if (telemetry !== undefined) {
    tables.push({
      title: "telemetry: the same steadfast without export, exporting everything, and at 10% trace sampling",
      note: `${
        allScenarios[0]!.updates
      } updates, Bot API answers at once; medians of ${settings.rounds} alternating round(s); export over OTLP/protobuf to a local sink (bench/otlpSink.ts).`,
      header: ["metric", "steadfast", "+otel", "+otel ÷ off", "+otel@10%", "@10% ÷ off"],
      rows: telemetry.medians.map((
        m
      ) => [m.metric, fmt(m.off, m.digits), fmt(m.on, m.digits), fmt(m.ratio, 3), fmt(m.sampled, m.digits), fmt(m.sampledRatio, 3)])
    })
  }
  if (preCheckout !== undefined) {
    const r = preCheckout.result
    tables.push({
      title: "pre-checkout: answer latency while other updates arrive (steadfast only)",
      header: ["metric", "steadfast"],
      rows: [
        ["queries answered ok / posted", `${r.answeredOk} / ${r.queries}`],
        ["ack → answer p50 / p99 / max (ms)", `${fmt(r.latency.p50, 0)} / ${fmt(r.latency.p99, 0)} / ${fmt(r.latency.max, 0)}`],
        ["background updates/s: target / achieved", `${r.background.targetPerSecond} / ${fmt(r.background.achievedPerSecond, 1)}`]
      ]
    })
  }
  tables.push({
    title: "targets",
    header: ["scenario", "target", "peer", "steadfast", "met"],
    rows: verdicts.map((c) => [
      c.scenario,
      c.target,
      fmt(c.peer, 2),
      fmt(c.steadfast, c.scenario === "telemetry" ? 3 : 2),
      c.met === undefined ? "-" : c.met ? "yes" : "**no**"
    ])
  })
  return {
    date: finishedAt,
    command,
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${Math.round(totalmem() / 2 ** 30)} GB, node ${process.version}`,
    code: `${git.head}${git.dirtySrcFiles > 0 ? ` + ${git.dirtySrcFiles} uncommitted file(s) under src/` : ""}`,
    settings:
      `${settings.updates} updates over ${settings.chats} chats, ${settings.rounds} round(s), ${settings.concurrency} connections, ${settings.warmup} warm-up updates per run, paced round ${settings.pacedRate}/s for ${settings.pacedSeconds} s`,
    notes: [
      "one embedded PostgreSQL (fsync off), a fresh database per run; contender, driver, Bot API stand-in and PostgreSQL share the machine",
      `steadfast runs with SEND_RATE_PER_SECOND=${settings.sendRatePerSecond} (the peer has no rate limit); ratios compare contenders within this run only`
    ],
    tables
  }
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
        for (const contender of contendersOf(scenario)) {
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

    let telemetry: TelemetrySummary | undefined
    if (telemetryMode) {
      const scenario = allScenarios[0]!
      say(
        `== telemetry: ${scenario.title}; ${scenario.updates} updates over ${
          Math.min(settings.chats, scenario.updates)
        } chats, ${settings.rounds} round(s) of steadfast off/on`
      )
      say("   steadfast+otel: OTEL_EXPORTER_OTLP_ENDPOINT at a local sink (bench/otlpSink.ts, a separate process, counted as bench CPU);")
      say("   traces, metrics and logs on, everything else (protocol, batching, 10 s metric interval) at its defaults;")
      say(`   steadfast+otel@10%: the same with OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=${SAMPLED_RATIO}`)
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
      verdicts.push(...telemetry.checks)
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

    // Only a full run replaces the figures in bench/README.md; a partial one reports beside its results.
    const partial = quick || settings.profile || values.only !== undefined || onlyPreCheckout
    const reportFile = partial ? join(resultsDir, "README.md") : join(root, "bench/README.md")
    writeReport(
      reportFile,
      renderReport(markdownReport(report.finishedAt, results, verdicts, telemetry, preCheckout)),
      telemetry === undefined ? "main" : "telemetry"
    )
    say(`report: ${partial ? "bench/results/README.md (a partial run leaves bench/README.md alone)" : "bench/README.md"}`)
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
