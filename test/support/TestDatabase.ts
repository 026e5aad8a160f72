import { inject } from "@effect/vitest"
import { createDatabase } from "./EmbeddedCluster.ts"

let counter = 0

/** A new, empty database on the run's shared PostgreSQL server, unique to the calling test file. */
export const freshDatabase = (label: string): Promise<string> =>
  createDatabase(inject("databaseUrl"), `t_${label.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}_${process.pid}_${++counter}`)
