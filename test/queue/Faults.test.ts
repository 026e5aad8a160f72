import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { HandlerFailure, isCommand, makeHandler } from "../../src/bot/Handler.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { BotApi } from "../../src/telegram/BotApi.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { AppDatabase, freshDatabase, inboxRow, type PgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"

// `/cut`: the handler's connection is terminated under it, the first time (a sequence does not
// roll back). `/ask`: the handler asks the Bot API something at once (getChat).
const handlers = [
  makeHandler({
    name: "cut",
    matches: isCommand("cut"),
    handle: ({ reply }) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`SELECT CASE WHEN nextval('cuts') = 1 THEN pg_terminate_backend(pg_backend_pid()) END`
        yield* reply("survived the cut")
      })
  }),
  makeHandler({
    name: "ask",
    matches: isCommand("ask"),
    handle: ({ chatId, reply }) =>
      Effect.gen(function*() {
        const botApi = yield* BotApi
        const chat = yield* botApi.call("getChat", { chat_id: chatId ?? 0 }).pipe(
          Effect.catchTags({
            ChatBlocked: (error) => Effect.fail(new HandlerFailure({ reason: error.message })),
            BotApiRejected: (error) => Effect.fail(new HandlerFailure({ reason: error.message }))
          })
        )
        yield* reply(`asked about ${chat.id}`)
      })
  })
]

const app = Layer.unwrap(Effect.map(Effect.promise(() => freshDatabase("faults")), (url) =>
  Layer.merge(
    // One attempt only: if an outage counted as one, these updates would be dead at once.
    testAppLayer({ databaseUrl: url, handlers, env: { MAX_ATTEMPTS: "1" } }),
    AppDatabase.layer(url)
  )))

/** Waits until the update is `status`, or dead (so a wrong dead-lettering fails at once). */
const awaitStatusOrDead = (pg: PgProbe, updateId: number, status: string) =>
  eventually(
    `update ${updateId} to be ${status}`,
    inboxRow(pg, updateId),
    (row) => row?.status === status || row?.status === "dead",
    { timeout: "60 seconds", interval: "100 millis" }
  )

// Only a handler's own failures count toward MAX_ATTEMPTS: a lost database connection or a Bot API
// that stays unreachable say nothing about the update, and never dead-letter it.
layer(app, { excludeTestServices: true })("infrastructure faults are not attempts", (it) => {
  it.effect("a handler whose database connection is cut is retried, not dead-lettered, with MAX_ATTEMPTS=1", () =>
    Effect.gen(function*() {
      const pg = yield* AppDatabase
      yield* pg.query("CREATE SEQUENCE cuts")
      const base = yield* baseUrl
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 8001, chatId: 8001, text: "/cut" }))).status, 200)
      const row = yield* awaitStatusOrDead(pg, 8001, "done")
      assert.strictEqual(row?.status, "done")
      assert.strictEqual(row?.attempts, 1, "the cut run is not counted")
      const runs = yield* pg.rows(Schema.Struct({ n: Schema.Number }), "SELECT last_value::int AS n FROM cuts")
      assert.strictEqual(runs[0]?.n, 2, "it ran twice")
    }))

  it.effect("a handler that finds the Bot API unreachable is retried until it answers, not dead-lettered", () =>
    Effect.gen(function*() {
      const pg = yield* AppDatabase
      const standIn = yield* BotApiRecorder
      const unavailable = { status: 502, body: { ok: false, error_code: 502, description: "Bad Gateway" } }
      // More 502s than the client's own retries (4) allow: the run fails with BotApiUnavailable.
      yield* standIn.script("getChat", Array.from({ length: 6 }, () => unavailable))
      const base = yield* baseUrl
      assert.strictEqual((yield* postUpdate(base, sampleUpdate({ updateId: 8101, chatId: 8101, text: "/ask" }))).status, 200)
      const row = yield* awaitStatusOrDead(pg, 8101, "done")
      assert.strictEqual(row?.status, "done")
      assert.strictEqual(row?.attempts, 1, "the runs that found no Bot API are not counted")
      const replies = (yield* standIn.calls).filter((call) => call.method === "sendMessage" && call.params["chat_id"] === 8101)
      assert.deepStrictEqual(replies.map((call) => call.params["text"]), ["asked about 8101"])
    }))
})
