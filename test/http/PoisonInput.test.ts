import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { AppDatabase, freshDatabase, type PgProbe } from "../support/TestDatabase.ts"

const appOnFreshDatabase = Layer.unwrap(
  Effect.map(
    Effect.promise(() => freshDatabase("poison_input")),
    (url) => Layer.merge(testAppLayer({ databaseUrl: url }), AppDatabase.layer(url))
  )
)

/** An update whose JSON text carries `escaped` (JSON escape sequences) inside the message text. */
const poisoned = (updateId: number, escaped: string) =>
  JSON.stringify(sampleUpdate({ updateId, chatId: updateId, text: "TEXT" })).replace("TEXT", `before${escaped}after`)

/** JSON nested deeper than PostgreSQL's parser allows, though JavaScript parses it. */
const tooDeep = (updateId: number) => `{"update_id":${updateId},"message":{"deep":${"[".repeat(200_000)}${"]".repeat(200_000)}}}`

const storedStatuses = (pg: PgProbe, from: number, to: number) =>
  pg.rows(
    Schema.Struct({ update_id: Schema.String, status: Schema.String }),
    "SELECT update_id::text, status FROM inbox WHERE update_id BETWEEN $1 AND $2 ORDER BY update_id",
    [from, to]
  )

// JSON that Node parses but PostgreSQL's jsonb refuses must never be answered 503 (Telegram would
// redeliver it for a day, holding up its chat), nor fail the other updates stored in the same batch.
layer(appOnFreshDatabase, { excludeTestServices: true })("input PostgreSQL refuses", (it) => {
  it.effect("NUL and unpaired surrogate escapes are stored with U+FFFD in their place and answered", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const standIn = yield* BotApiRecorder
      const cases = ["\\u0000", "\\ud800", "\\udfff", "\\ud83d", "x\\ude00"]
      const statuses = yield* Effect.forEach(cases, (escaped, index) =>
        Effect.map(postUpdate(base, poisoned(3000 + index, escaped)), (response) => response.status))
      assert.deepStrictEqual(
        statuses,
        cases.map(() =>
          200
        )
      )
      // Each is processed: the fallback quotes the text back, with U+FFFD where jsonb could not hold it.
      const calls = yield* standIn.awaitCalls(
        (calls) =>
          cases.every((_, index) => calls.some((call) => call.method === "sendMessage" && call.params["chat_id"] === 3000 + index)),
        "20 seconds"
      )
      const quoted = calls.filter((call) => call.method === "sendMessage" && call.params["chat_id"] === 3000).map((call) =>
        String(call.params["text"])
      )
      assert.include(quoted[0] ?? "", "before\uFFFDafter")
    }))

  it.effect("innocent updates batched with poisoned ones are all answered 200 the first time", () =>
    Effect.gen(function*() {
      const base = yield* baseUrl
      const pg = yield* AppDatabase
      const bodies = Array.from({ length: 30 }, (_, index) => {
        const updateId = 3100 + index
        if (index % 10 === 3) return { updateId, body: poisoned(updateId, "\\u0000"), poison: true }
        if (index % 10 === 7) return { updateId, body: tooDeep(updateId), poison: true }
        return { updateId, body: JSON.stringify(sampleUpdate({ updateId, chatId: updateId, text: `innocent ${index}` })), poison: false }
      })
      // All at once, so that they share insert batches.
      const answers = yield* Effect.forEach(bodies, ({ body }) => Effect.map(postUpdate(base, body), (response) => response.status), {
        concurrency: "unbounded"
      })
      bodies.forEach(({ poison }, index) => {
        if (!poison) assert.strictEqual(answers[index], 200, `innocent update ${bodies[index]!.updateId}`)
        // A poisoned update is stored (200) or refused for good (4xx); never "try again" (5xx).
        else assert.isBelow(answers[index]!, 500, `poisoned update ${bodies[index]!.updateId}`)
      })
      const stored = new Set((yield* storedStatuses(pg, 3100, 3129)).map((row) => Number(row.update_id)))
      for (const { updateId, poison } of bodies) if (!poison) assert.isTrue(stored.has(updateId), `update ${updateId} stored`)
      // The too-deep one is refused for good: redelivering it gets the same 4xx, never 503.
      const again = yield* postUpdate(base, tooDeep(3107))
      assert.strictEqual(again.status, answers[7])
    }))
})
