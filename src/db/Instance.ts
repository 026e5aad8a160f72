import { Context, Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"

/**
 * This running instance, as the owner of the leases it takes. An update or call leased to the
 * current owner may queue behind its chat in this instance's memory; work of any other owner goes
 * through the table. When the instance loses track of something it leased (a commit whose outcome
 * is unknown, an outcome it could not record), it `forget`s: it takes a new owner id, so the lost
 * row counts as another owner's until its lease expires and it is claimed, in order, like theirs.
 */
export class Instance extends Context.Service<Instance, {
  readonly owner: () => string
  readonly forget: Effect.Effect<void>
}>()("steadfast/db/Instance") {
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
