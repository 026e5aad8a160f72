import { Context, Layer } from "effect"
import { randomUUID } from "node:crypto"

/**
 * This running instance, as the owner of the leases it takes. Work leased to the same owner may
 * queue behind its chat in this instance's memory; work of other owners goes through the table.
 */
export class Instance extends Context.Service<Instance, { readonly id: string }>()("steadfast/db/Instance") {
  static readonly layer = Layer.sync(Instance, () => Instance.of({ id: randomUUID() }))
}
