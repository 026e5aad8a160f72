// The per-chat queues on their own: order within a chat, placing claimed items, draining a
// stopped chat and giving everything back at shutdown (PROTOCOL.md, "chat-order").
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeChatQueues } from "../../src/queue/ChatQueues.ts"

interface Item {
  readonly chatKey: string
  readonly id: number
}

const item = (chatKey: string, id: number): Item => ({ chatKey, id })

describe("ChatQueues", () => {
  it.effect("items queue behind their chat's running one in their own order, whatever order they arrive in", () =>
    Effect.gen(function*() {
      const chats = makeChatQueues<Item>((queued) => queued.id)
      chats.start("a")
      for (const id of [5, 3, 9, 4]) chats.enqueue(item("a", id))
      chats.enqueue(item("b", 1))
      assert.deepStrictEqual(chats.waiting("a").map((queued) => queued.id), [3, 4, 5, 9])
      assert.deepStrictEqual(chats.waiting("b").map((queued) => queued.id), [1])
      assert.isTrue(chats.isRunning("a"))
      chats.letGo("a")
      assert.isFalse(chats.isRunning("a"))
    }))

  it.effect("a claimed item starts its chat when the chat is free, and queues behind it when it runs", () =>
    Effect.gen(function*() {
      const chats = makeChatQueues<Item>((queued) => queued.id)
      const started: Array<number> = []
      const run = (placed: Item) => Effect.sync(() => void started.push(placed.id))
      assert.isTrue(yield* chats.place(item("a", 1), run))
      assert.isFalse(yield* chats.place(item("a", 2), run))
      assert.deepStrictEqual(started, [1])
      assert.deepStrictEqual(chats.waiting("a").map((queued) => queued.id), [2])
    }))

  it.effect("draining a stopped chat gives back what waits and what joins meanwhile, then lets the chat go", () =>
    Effect.gen(function*() {
      const chats = makeChatQueues<Item>((queued) => queued.id)
      chats.start("a")
      chats.enqueue(item("a", 2))
      const late = [item("a", 3)]
      const givenBack: Array<number> = []
      yield* chats.drain("a", (back) =>
        Effect.sync(() => {
          givenBack.push(back.id)
          // An item handed over while the chat is being drained joins it: it must go back too.
          if (back.id === 2) chats.enqueue(item("a", 4))
        }), () => late.splice(0))
      assert.deepStrictEqual(givenBack, [2, 3, 4])
      assert.isFalse(chats.isRunning("a"))
    }))

  it.effect("at shutdown every waiting item goes back, counted, and no chat is left running", () =>
    Effect.gen(function*() {
      const chats = makeChatQueues<Item>((queued) => queued.id)
      chats.start("a")
      chats.start("b")
      chats.enqueue(item("a", 2))
      chats.enqueue(item("b", 7))
      chats.enqueue(item("b", 8))
      const givenBack: Array<number> = []
      const count = yield* chats.giveBackAll((back) => Effect.sync(() => void givenBack.push(back.id)))
      assert.strictEqual(count, 3)
      assert.deepStrictEqual(givenBack.sort(), [2, 7, 8])
      assert.isFalse(chats.isRunning("a") || chats.isRunning("b"))
    }))
})
