// Samples a contender while the driver runs: its database connections (pg_stat_activity),
// steadfast's own pool figures (GET /health), RSS, and the CPU used by it and its backends.
import type pg from "pg"
import { setTimeout as sleep } from "node:timers/promises"
import { percentile } from "./stats.ts"
import { cpuSeconds, machineCpu, statusKb } from "./processes.ts"

export interface MonitorResult {
  /** Most connections the contender had open to its database at once. */
  readonly pgConnectionsMax: number
  /** Most of them not idle at once (running a statement or idle in a transaction). */
  readonly pgBusyMax: number
  /** steadfast only: the most pool slots `/health` reported in use, and the pool size. */
  readonly poolUsedMax: number | undefined
  readonly poolMax: number | undefined
  readonly poolPendingMax: number | undefined
  /** steadfast only: the largest inbox backlog `/health` reported. */
  readonly inboxPendingMax: number | undefined
  readonly healthSamples: number
  readonly healthFailures: number
  /** steadfast only: /health response times under the load (issue 4: p99 under 50 ms). */
  readonly healthP99Ms: number | undefined
  readonly healthMaxMs: number | undefined
  readonly rssMaxKb: number
  readonly cpuSeconds: number
  /** CPU used by the PostgreSQL backends serving the contender's database. */
  readonly dbCpuSeconds: number
  /** CPU used by the stand-in and by this process (driver and samplers). */
  readonly benchCpuSeconds: number
  /** The machine's busy share over the run (all cores). */
  readonly machineBusy: number
  /**
   * Machine CPU not explained by the contender, its backends, the stand-in and the driver:
   * PostgreSQL's background processes, and anything else running on the machine (noise).
   */
  readonly otherCpuSeconds: number
  readonly wallSeconds: number
}

interface HealthBody {
  readonly checks?: Record<string, ReadonlyArray<{ readonly observedValue?: unknown }>>
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

export const numberField = (value: unknown, key: string): number | undefined =>
  isRecord(value) && typeof value[key] === "number" ? value[key] : undefined

export const isHealthBody = (value: unknown): value is HealthBody =>
  isRecord(value) && (value["checks"] === undefined || isRecord(value["checks"]))

export const startMonitor = (options: {
  /** The contender's processes (one per instance): CPU summed, RSS summed. */
  readonly pids: ReadonlyArray<number>
  readonly admin: pg.Client
  readonly database: string
  readonly healthUrl: string | undefined
  /** Other bench processes (the stand-in), counted in benchCpuSeconds. */
  readonly benchPids: ReadonlyArray<number>
}) => {
  let active = true
  const startedAt = Date.now()
  const machineAtStart = machineCpu()
  const ownAtStart = process.cpuUsage()
  const benchAtStart = options.benchPids.map((pid) => cpuSeconds(pid) ?? 0)
  let pgConnectionsMax = 0
  let pgBusyMax = 0
  let poolUsedMax: number | undefined
  let poolMax: number | undefined
  let poolPendingMax: number | undefined
  let inboxPendingMax: number | undefined
  let healthSamples = 0
  let healthFailures = 0
  const healthMs: Array<number> = []
  let rssMaxKb = 0
  const cpuOf = (pid: number, fallback = 0) => cpuSeconds(pid) ?? fallback
  const cpuAtStart = options.pids.map((pid) => cpuOf(pid))
  // Backend CPU: first and latest reading per backend pid; a backend started during the run counts from 0.
  const backendBaseline = new Map<number, number>()
  const backendLatest = new Map<number, number>()
  let baselineTaken = false

  const samplePg = async () => {
    while (active) {
      const { rows } = await options.admin.query<{ pid: number; state: string | null }>(
        "SELECT pid, state FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        [options.database]
      )
      pgConnectionsMax = Math.max(pgConnectionsMax, rows.length)
      pgBusyMax = Math.max(pgBusyMax, rows.filter((row) => row.state !== null && row.state !== "idle").length)
      for (const row of rows) {
        const cpu = cpuSeconds(row.pid)
        if (cpu === undefined) continue
        if (!backendBaseline.has(row.pid)) backendBaseline.set(row.pid, baselineTaken ? 0 : cpu)
        backendLatest.set(row.pid, cpu)
      }
      baselineTaken = true
      rssMaxKb = Math.max(rssMaxKb, options.pids.reduce((sum, pid) => sum + (statusKb(pid, "VmRSS") ?? 0), 0))
      await sleep(100)
    }
  }

  const sampleHealth = async (url: string) => {
    while (active) {
      try {
        const sentAt = performance.now()
        const response = await fetch(url, { signal: AbortSignal.timeout(2_000) })
        const body: unknown = await response.json()
        healthMs.push(performance.now() - sentAt)
        healthSamples++
        if (isHealthBody(body)) {
          const pool = body.checks?.["postgres:connections"]?.[0]?.observedValue
          const used = numberField(pool, "used")
          if (used !== undefined) poolUsedMax = Math.max(poolUsedMax ?? 0, used)
          poolMax = numberField(pool, "max") ?? poolMax
          const pending = numberField(pool, "pending")
          if (pending !== undefined) poolPendingMax = Math.max(poolPendingMax ?? 0, pending)
          const backlog = numberField(body.checks?.["inbox:backlog"]?.[0]?.observedValue, "pending")
          if (backlog !== undefined) inboxPendingMax = Math.max(inboxPendingMax ?? 0, backlog)
        }
        if (!response.ok) healthFailures++
      } catch {
        healthFailures++
      }
      // Every /health also runs two queries on the pool: often enough to see the peak, rarely enough not to cause it.
      await sleep(500)
    }
  }

  const loops = Promise.all([samplePg(), options.healthUrl === undefined ? Promise.resolve() : sampleHealth(options.healthUrl)])

  return {
    stop: async (): Promise<MonitorResult> => {
      active = false
      await loops
      let dbCpu = 0
      for (const [pid, latest] of backendLatest) dbCpu += latest - (backendBaseline.get(pid) ?? 0)
      const own = process.cpuUsage(ownAtStart)
      const benchCpu = (own.user + own.system) / 1e6 +
        options.benchPids.reduce((sum, pid, i) => sum + (cpuSeconds(pid) ?? benchAtStart[i]!) - benchAtStart[i]!, 0)
      const machine = machineCpu()
      const machineBusySeconds = machine.busy - machineAtStart.busy
      const contenderCpu = options.pids.reduce((sum, pid, i) => sum + cpuOf(pid, cpuAtStart[i]) - cpuAtStart[i]!, 0)
      return {
        pgConnectionsMax,
        pgBusyMax,
        poolUsedMax,
        poolMax,
        poolPendingMax,
        inboxPendingMax,
        healthSamples,
        healthFailures,
        healthP99Ms: healthMs.length === 0 ? undefined : percentile([...healthMs].sort((a, b) => a - b), 99),
        healthMaxMs: healthMs.length === 0 ? undefined : Math.max(...healthMs),
        rssMaxKb,
        cpuSeconds: contenderCpu,
        dbCpuSeconds: dbCpu,
        benchCpuSeconds: benchCpu,
        machineBusy: machineBusySeconds / Math.max(0.001, machine.total - machineAtStart.total),
        otherCpuSeconds: Math.max(0, machineBusySeconds - contenderCpu - dbCpu - benchCpu),
        wallSeconds: (Date.now() - startedAt) / 1000
      }
    }
  }
}

export interface StatementStat {
  readonly query: string
  readonly calls: number
  readonly totalMs: number
  /** Planning time (pg_stat_statements.track_planning). */
  readonly planMs: number
}

/** pg_stat_statements for one database, keyed by statement. */
export const statementSnapshot = async (admin: pg.Client, database: string): Promise<Map<string, StatementStat>> => {
  const { rows } = await admin.query<{ key: string; query: string; calls: string; total_ms: number; plan_ms: number }>(
    `SELECT s.queryid::text || ':' || s.toplevel::text AS key, s.query, s.calls::text AS calls, s.total_exec_time AS total_ms,
            s.total_plan_time AS plan_ms
     FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1`,
    [database]
  )
  return new Map(rows.map((row) => [row.key, { query: row.query, calls: Number(row.calls), totalMs: row.total_ms, planMs: row.plan_ms }]))
}

/** What ran between two snapshots, most calls first. */
export const statementDelta = (before: Map<string, StatementStat>, after: Map<string, StatementStat>): Array<StatementStat> =>
  Array.from(after, ([key, stat]) => {
    const earlier = before.get(key)
    return {
      query: stat.query,
      calls: stat.calls - (earlier?.calls ?? 0),
      totalMs: stat.totalMs - (earlier?.totalMs ?? 0),
      planMs: stat.planMs - (earlier?.planMs ?? 0)
    }
  })
    .filter((stat) => stat.calls > 0)
    .sort((a, b) => b.calls - a.calls || b.totalMs - a.totalMs)
