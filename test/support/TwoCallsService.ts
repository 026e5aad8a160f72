// A service process (`node test/support/TwoCallsService.ts`) whose bot makes two Bot API calls at
// once, then writes the sender's `users` row: a test holding that row holds the handler after its
// calls. `/crash` takes the whole process down with SIGKILL while it handles the update.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { makeAppLayer } from "../../src/App.ts"
import { Bot } from "../../src/bot/Bot.ts"
import { isCommand, makeHandler } from "../../src/bot/Handler.ts"
import { Logging } from "../../src/observability/Logging.ts"

const crash = makeHandler({
  name: "crash",
  matches: isCommand("crash"),
  handle: ({ reply, update }) =>
    Effect.andThen(reply(`crashing on ${update.update_id}`), Effect.sync(() => process.kill(process.pid, "SIGKILL")))
})

const twoCalls = makeHandler({
  name: "two-calls",
  matches: (update) => update.message?.text !== undefined,
  handle: ({ reply, update }) =>
    Effect.gen(function*() {
      yield* reply(`first ${update.update_id}`)
      yield* reply(`second ${update.update_id}`)
      const sql = yield* SqlClient
      yield* sql`
        INSERT INTO users (telegram_id, first_name) VALUES (${update.message!.chat.id}, 'two-calls')
        ON CONFLICT (telegram_id) DO UPDATE SET last_seen = now()`
    })
})

Layer.launch(makeAppLayer({ bot: Bot.layerWith([crash, twoCalls]) })).pipe(
  Effect.provide(Logging.layer),
  NodeRuntime.runMain
)
