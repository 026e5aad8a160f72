import { randomUUID } from "node:crypto"
import packageJson from "../../package.json" with { type: "json" }

/**
 * What every signal says about its source: the version from package.json and an id unique to
 * this process, so that two replicas (or a restart) are told apart in traces, metrics and logs.
 */
export const serviceIdentity = {
  version: packageJson.version,
  instanceId: randomUUID()
} as const
