import type { TestProject } from "vitest/node"
import { startCluster } from "./support/EmbeddedCluster.ts"

declare module "vitest" {
  interface ProvidedContext {
    readonly databaseUrl: string
  }
}

export default async function setup(project: TestProject) {
  const cluster = await startCluster()
  project.provide("databaseUrl", cluster.url("postgres"))
  return () => cluster.dispose()
}
