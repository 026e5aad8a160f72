import { Context, Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"

/**
 * This running instance, as the owner of the leases it takes. An update or call leased to the
 * current owner may queue behind its chat in this instance's memory; work of any other owner goes
 * through the table. When a chat's run stops (a retry, a takeover, a commit whose outcome is
 * unknown), the instance `forget`s: it takes a new owner id, so whatever it leased before counts
 * as another owner's, and nothing of that chat runs from memory ahead of the stopped update.
 */
export class Instance extends Context.Service<Instance, {
  readonly owner: () => string
  readonly forget: Effect.Effect<void>
}>()("steadfast/queue/Instance") {
  static readonly layer = Layer.sync(Instance, () => {
    let owner = randomUUID()
    return Instance.of({
      owner: () => owner,
      forget: Effect.sync(() => {
        owner = randomUUID()
      })
    })
  })
}
