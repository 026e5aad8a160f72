import { Effect } from "effect"

/**
 * The chats running in this instance (in the dispatcher, or in the sender), each with the work
 * leased to us that waits behind its running item, in `order`. One fiber runs a chat's items one
 * after the other; a chat is here from the moment its first item starts until it is let go.
 */
export const makeChatQueues = <A extends { readonly chatKey: string }>(order: (item: A) => number) => {
  const chats = new Map<string, Array<A>>()
  const enqueue = (item: A) => {
    const queue = chats.get(item.chatKey) ?? []
    const at = queue.findIndex((waiting) => order(waiting) > order(item))
    queue.splice(at === -1 ? queue.length : at, 0, item)
    chats.set(item.chatKey, queue)
  }
  return {
    isRunning: (chatKey: string) => chats.has(chatKey),
    /** Its first item starts now: the chat runs here, nothing waits behind it yet. */
    start: (chatKey: string) => void chats.set(chatKey, []),
    /** Queues an item behind its chat's running one, in order. */
    enqueue,
    /** The chat's waiting items, as the live queue (taking from it takes them). */
    waiting: (chatKey: string): Array<A> => chats.get(chatKey) ?? [],
    letGo: (chatKey: string) => void chats.delete(chatKey),
    /**
     * A claimed item: queued behind its chat if that runs here, else the chat starts with it
     * (`run`, in a slot the claim loop took). True when it started.
     */
    place: (item: A, run: (item: A) => Effect.Effect<unknown>): Effect.Effect<boolean> =>
      Effect.suspend(() => {
        if (chats.has(item.chatKey)) {
          enqueue(item)
          return Effect.succeed(false)
        }
        chats.set(item.chatKey, [])
        return Effect.as(run(item), true)
      }),
    /**
     * A stopped chat: what waits behind it goes back (`giveBack`), also what joins meanwhile or
     * `more` finds, and the chat is let go in the same synchronous step that finds nothing left.
     */
    drain: (chatKey: string, giveBack: (item: A) => Effect.Effect<void>, more: () => ReadonlyArray<A> = () => []) => {
      const drain: Effect.Effect<void> = Effect.suspend(() => {
        const waiting = [...(chats.get(chatKey)?.splice(0) ?? []), ...more()]
        if (waiting.length === 0) {
          chats.delete(chatKey)
          return Effect.void
        }
        return Effect.andThen(Effect.forEach(waiting, giveBack, { discard: true }), drain)
      })
      return drain
    },
    /** At shutdown, once the fibers are gone: what still waits goes back (`giveBack`); answers how many. */
    giveBackAll: (giveBack: (item: A) => Effect.Effect<void>) =>
      Effect.suspend(() => {
        const waiting = [...chats.values()].flat()
        return Effect.as(Effect.forEach(waiting, giveBack, { discard: true }), waiting.length)
      }).pipe(Effect.ensuring(Effect.sync(() => chats.clear())))
  }
}
