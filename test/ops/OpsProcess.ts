// Runs the real ops CLI (`node src/ops/cli.ts ...`) as a child process and collects what it printed.
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../../", import.meta.url))
const cli = fileURLToPath(new URL("../../src/ops/cli.ts", import.meta.url))

export interface OpsResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * `args` as given to `npm run ops -- ...`, with `env` on top of a minimal environment (no
 * DATABASE_URL unless given). `cwd` defaults to the repository root, where `.data/` lives.
 */
export const runOps = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly cwd?: string } = {}
): Effect.Effect<OpsResult> =>
  Effect.callback<OpsResult>((resume) => {
    const child = spawn(process.execPath, [cli, ...args], {
      cwd: options.cwd ?? root,
      env: { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => void (stdout += chunk.toString("utf8")))
    child.stderr.on("data", (chunk: Buffer) => void (stderr += chunk.toString("utf8")))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => void child.kill("SIGKILL"))
  }).pipe(
    Effect.timeoutOrElse({
      duration: "90 seconds",
      orElse: () => Effect.die(new Error(`ops ${args.join(" ")} did not finish within 90 seconds`))
    })
  )
