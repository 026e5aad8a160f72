import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Option } from "effect"
import { Inbox } from "../../src/queue/Inbox.ts"
import { INGRESS_CAPACITY } from "../../src/queue/Store.ts"
import { testAppLayer } from "../support/TestApp.ts"
import { AppDatabase, freshDatabase, inboxRow, pgSession } from "../support/TestDatabase.ts"

const app = Layer.unwrap(
  Effect.map(
    Effect.promise(() => freshDatabase("ingress_bound")),
    (url) => Layer.merge(testAppLayer({ databaseUrl: url }), AppDatabase.layer(url))
  )
)

const CHAT = "chat:4242"

layer(app, { excludeTestServices: true })("the ingress queue", (it) => {
  it.effect(
    "is bounded: with the database stuck, stores beyond the queue fail at once with IngressFull, and the rest are stored once it moves",
    () =>
      Effect.gen(function*() {
        const { url } = yield* AppDatabase
        const inbox = yield* Inbox
        // The store takes a per-chat advisory lock first: holding it keeps every batch waiting.
        const holder = yield* pgSession(url)
        yield* holder.query("SELECT pg_advisory_lock(1, hashtext($1))", [CHAT])

        const total = INGRESS_CAPACITY + 1_000
        const stores = yield* Effect.forEach(Array.from({ length: total }, (_, i) => 500_000 + i), (updateId) =>
          Effect.forkChild(Effect.exit(inbox.store({
            updateId,
            chatKey: CHAT,
            kind: "message",
            json: JSON.stringify({ update_id: updateId }),
            payload: { update_id: updateId },
            skipped: false,
            traceparent: null
          }))))
        // Whatever does not fit in the queue or the batches in flight is refused without waiting.
        const early = yield* Effect.forEach(stores, (fiber) =>
          Fiber.join(fiber).pipe(Effect.timeoutOption("2 seconds")), {
          concurrency: "unbounded"
        })
        const refused = early.filter((exit) =>
          Option.isSome(exit) && Exit.isFailure(exit.value)
        ).length
        assert.isAtLeast(refused, 1)
        assert.isAtMost(refused, total - INGRESS_CAPACITY)

        yield* holder.query("SELECT pg_advisory_unlock(1, hashtext($1))", [CHAT])
        const exits = yield* Effect.forEach(stores, Fiber.join)
        const stored = exits.filter(Exit.isSuccess).length
        assert.strictEqual(stored, total - refused, "every store not refused was stored")
        for (const exit of exits) {
          if (Exit.isFailure(exit)) assert.include(String(exit.cause), "IngressFull")
        }
        assert.strictEqual((yield* inboxRow(yield* AppDatabase, 500_000))?.kind, "message")
      }),
    60_000
  )
})
