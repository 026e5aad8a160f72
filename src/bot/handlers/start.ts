import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { isCommand, makeHandler } from "../Handler.ts"

export default makeHandler({
  name: "start",
  order: 10,
  matches: isCommand("start"),
  handle: Effect.fn("Handler.start")(function*({ update, reply }) {
    const sql = yield* SqlClient
    const from = update.message?.from
    if (from !== undefined) {
      yield* sql`
        INSERT INTO users (telegram_id, username, first_name, language_code)
        VALUES (${BigInt(from.id)}, ${from.username ?? null}, ${from.first_name ?? null}, ${from.language_code ?? null})
        ON CONFLICT (telegram_id) DO UPDATE SET
          username = excluded.username,
          first_name = excluded.first_name,
          language_code = excluded.language_code,
          last_seen = now()`
    }
    const name = from?.first_name ?? "there"
    yield* reply(`Hello, ${name}! I am steadfast. Send /help to see what I can do.`)
  })
})
