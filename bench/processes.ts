// Child processes of the benchmark (stand-in, contenders) and what /proc says about them.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { createWriteStream, readFileSync } from "node:fs"
import { setTimeout as sleep } from "node:timers/promises"
import { fileURLToPath } from "node:url"

export const root = fileURLToPath(new URL("../", import.meta.url))

export interface Child {
  readonly pid: number
  readonly process: ChildProcess
  /** Everything it printed so far. */
  readonly output: () => string
  /** Waits until the output matches `pattern`; rejects if the process exits first or on timeout. */
  readonly waitFor: (pattern: RegExp, timeoutMs: number) => Promise<RegExpExecArray>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (or signal name). */
  readonly stop: (graceMs: number) => Promise<string>
}

const running = new Set<ChildProcess>()
const killAll = () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
process.on("exit", killAll)

/** Starts `node [nodeArgs] <script> [args]` from the repository root with exactly `env` (plus PATH and HOME), its output teed to `logFile`. */
export const startNode = (
  script: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  logFile: string,
  nodeArgs: ReadonlyArray<string> = []
): Child => {
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
    cwd: root,
    env: { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  if (child.pid === undefined) throw new Error(`could not start ${script}`)
  running.add(child)
  const log = createWriteStream(logFile)
  let output = ""
  const listeners = new Set<() => void>()
  const append = (chunk: Buffer) => {
    // Readiness lines come early: keep the first 64 kB in memory, the rest goes to the file only.
    if (output.length < 65_536) output += chunk.toString("utf8")
    log.write(chunk)
    for (const listener of listeners) listener()
  }
  child.stdout?.on("data", append)
  child.stderr?.on("data", append)
  const exited = new Promise<string>((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child)
      log.end()
      for (const listener of listeners) listener()
      resolve(code !== null ? String(code) : String(signal))
    })
  })

  const waitFor = (pattern: RegExp, timeoutMs: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(output)
        if (match !== null) {
          done()
          resolve(match)
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done()
          reject(new Error(`${script} exited before printing ${pattern}:\n${output}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${script} did not print ${pattern} within ${timeoutMs} ms:\n${output}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        listeners.delete(check)
      }
      listeners.add(check)
      check()
    })

  const stop = async (graceMs: number) => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
    const timeout = sleep(graceMs).then(() => "timeout" as const)
    const result = await Promise.race([exited, timeout])
    if (result !== "timeout") return result
    child.kill("SIGKILL")
    return `${await exited} (SIGKILL after ${graceMs} ms)`
  }

  return { pid: child.pid, process: child, output: () => output, waitFor, stop }
}

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100
  } catch {
    return 100
  }
})()

/** User + system CPU seconds the process has used so far, or undefined once it is gone. */
export const cpuSeconds = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / clockTicks
  } catch {
    return undefined
  }
}

/** A field of /proc/PID/status in kB (VmHWM is the peak resident set size). */
export const statusKb = (pid: number, field: "VmHWM" | "VmRSS"): number | undefined => {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/** Busy and total CPU seconds of the whole machine so far (all cores), from /proc/stat. */
export const machineCpu = (): { readonly busy: number; readonly total: number } => {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest time is already inside user).
  const total = fields.slice(0, 8).reduce((sum, v) => sum + v, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  return { busy: (total - idle) / clockTicks, total: total / clockTicks }
}

/**
 * Waits (at most `maxWaitMs`) for a second in which the machine is less than `threshold` busy,
 * so that a run does not start in the middle of someone else's burst. Returns the last busy share.
 */
export const waitForQuiet = async (threshold: number, maxWaitMs: number): Promise<number> => {
  const deadline = Date.now() + maxWaitMs
  let share = 1
  while (true) {
    const before = machineCpu()
    await sleep(1_000)
    const after = machineCpu()
    share = (after.busy - before.busy) / Math.max(0.001, after.total - before.total)
    if (share < threshold || Date.now() >= deadline) return share
  }
}
