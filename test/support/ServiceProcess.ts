// Runs the real service (`node src/main.ts`) as a child process, for behaviour that is about
// processes: signals, kill -9, restarts, exit codes.
import { Data, Deferred, Duration, Effect, Ref, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../../", import.meta.url))

export class ServiceProcessError extends Data.TaggedError("ServiceProcessError")<{
  readonly reason: string
  readonly output: string
}> {
  override get message() {
    return `${this.reason}\n--- service output ---\n${this.output}`
  }
}

export interface ServiceProcess {
  readonly child: ChildProcess
  readonly pid: number
  /** http://127.0.0.1:PORT */
  readonly baseUrl: string
  /** Everything the process printed so far (stdout and stderr interleaved). */
  readonly output: Effect.Effect<string>
  /** Waits until the output matches `pattern`. */
  readonly waitForOutput: (pattern: RegExp, timeout?: Duration.Input) => Effect.Effect<string, ServiceProcessError>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Effect.Effect<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/**
 * Starts the service with `env` (on top of a minimal environment) and, unless `waitForListening`
 * is false, waits for its "Listening on" line. The scope kills it with SIGKILL if it still runs.
 */
export const spawnService = (
  env: Record<string, string>,
  options: {
    readonly waitForListening?: boolean
    readonly startTimeout?: Duration.Input
    /** What to run instead of `node src/main.ts` (e.g. `npm start`), and where. */
    readonly command?: readonly [string, ...Array<string>]
    readonly cwd?: string
  } = {}
): Effect.Effect<ServiceProcess, ServiceProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const output = yield* Ref.make("")
    const changed = yield* Ref.make(yield* Deferred.make<void>())
    const exit = yield* Deferred.make<{ code: number | null; signal: NodeJS.Signals | null }>()
    const context = yield* Effect.context<never>()
    const run = Effect.runSyncWith(context)

    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(options.command?.[0] ?? process.execPath, options.command?.slice(1) ?? [`${root}src/main.ts`], {
          cwd: options.cwd ?? root,
          env: { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "/tmp", PORT: "0", HOST: "127.0.0.1", ...env },
          stdio: ["ignore", "pipe", "pipe"]
        })
      ),
      (child) =>
        Effect.sync(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        })
    )
    const append = (chunk: Buffer) =>
      run(Effect.gen(function*() {
        yield* Ref.update(output, (text) => text + chunk.toString("utf8"))
        const next = yield* Deferred.make<void>()
        const previous = yield* Ref.getAndSet(changed, next)
        yield* Deferred.succeed(previous, undefined)
      }))
    child.stdout?.on("data", append)
    child.stderr?.on("data", append)
    child.on("exit", (code, signal) => {
      run(Deferred.succeed(exit, { code, signal }))
      append(Buffer.from(""))
    })

    const waitForOutput = (pattern: RegExp, timeout: Duration.Input = "20 seconds") =>
      Effect.gen(function*() {
        while (true) {
          const waiter = yield* Ref.get(changed)
          const text = yield* Ref.get(output)
          const match = pattern.exec(text)
          if (match !== null) return match[0]
          if (yield* Deferred.isDone(exit)) {
            return yield* new ServiceProcessError({ reason: `process exited before printing ${pattern}`, output: text })
          }
          yield* Deferred.await(waiter)
        }
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () =>
            Effect.flatMap(
              Ref.get(output),
              (text) => Effect.fail(new ServiceProcessError({ reason: `timed out waiting for ${pattern}`, output: text }))
            )
        })
      )

    let baseUrl = ""
    if (options.waitForListening !== false) {
      const line = yield* waitForOutput(/Listening on http:\/\/[^\s]+:(\d+)/, options.startTimeout ?? "30 seconds")
      const port = /:(\d+)$/.exec(line)?.[1]
      baseUrl = `http://127.0.0.1:${port}`
    }
    return {
      child,
      pid: child.pid ?? -1,
      baseUrl,
      output: Ref.get(output),
      waitForOutput,
      kill: (signal) => Effect.sync(() => void child.kill(signal)),
      exited: Deferred.await(exit)
    } satisfies ServiceProcess
  })
