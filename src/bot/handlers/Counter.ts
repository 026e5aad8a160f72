// The README's "Write your first handler" example, twice: a /count command with a +1 button and a
// per-chat counter, as a grammY Composer with a session, and the same in Effect style. Neither is
// in the shipped bot; add `counter` (or `counterHandlers`) to src/MyBot.ts to try it.
import { Composer, InlineKeyboard, session, type SessionFlavor } from "grammy"
import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { decodeRows } from "../../db/Rows.ts"
import type { SteadfastContext } from "../Grammy.ts"
import { isCommand, makeHandler } from "../Handler.ts"
import { sqlSessionStorage } from "../SessionStorage.ts"

// ---------------------------------------------------------------------------------------------
// grammY style

export interface CounterSession {
  count: number
}

export type CounterContext = SteadfastContext & SessionFlavor<CounterSession>

const keyboard = new InlineKeyboard().text("+1", "count:+1")

/** The counter's own namespace in the sessions table: other features' sessions on the same chat never collide with it. */
export const counterStorage = sqlSessionStorage<CounterSession>({ namespace: "counter" })

// The session is read only for the updates that use it: one query fewer for everything else.
const counterSession = session<CounterSession, CounterContext>({
  initial: () => ({ count: 0 }),
  storage: counterStorage
})

export const counter = new Composer<CounterContext>()

counter.command("count", counterSession, (ctx) => ctx.reply(`Count: ${ctx.session.count}`, { reply_markup: keyboard }))

counter.callbackQuery("count:+1", counterSession, (ctx) => {
  ctx.session.count += 1
  // Made in this order, at once; the new count commits with the update (a re-run gets both answers back).
  return ctx.answerCallbackQuery({ text: `Now ${ctx.session.count}` })
    .then(() => ctx.editMessageText(`Count: ${ctx.session.count}`, { reply_markup: keyboard }))
})

// ---------------------------------------------------------------------------------------------
// Effect style: the same counter, kept in the same table through the transaction's SqlClient

const decodeCount = decodeRows(Schema.Struct({ count: Schema.Number }))

const increment = Effect.fn("Counter.increment")(function*(key: string, by: number) {
  const sql = yield* SqlClient
  const rows = yield* sql`
    INSERT INTO sessions (key, value) VALUES (${key}, jsonb_build_object('count', ${by}::int))
    ON CONFLICT (key) DO UPDATE
      SET value = jsonb_build_object('count', coalesce((sessions.value->>'count')::int, 0) + ${by}::int), updated_at = now()
    RETURNING (value->>'count')::int AS count`.pipe(decodeCount)
  return rows[0]?.count ?? 0
})

const effectKeyboard = { inline_keyboard: [[{ text: "+1", callback_data: "ecount:+1" }]] }

export const counterHandlers = [
  makeHandler({
    name: "ecount",
    help: "/ecount - a counter (Effect style)",
    matches: isCommand("ecount"),
    handle: ({ chatKey, reply }) =>
      Effect.flatMap(increment(`effect:${chatKey}`, 0), (count) => reply(`Count: ${count}`, { reply_markup: effectKeyboard }))
  }),
  makeHandler({
    name: "ecount-button",
    matches: (update) => update.callback_query?.data === "ecount:+1",
    handle: Effect.fn("Handler.ecountButton")(function*({ update, chatKey, call }) {
      const query = update.callback_query
      const message = query?.message
      if (query === undefined || message === undefined) return
      const count = yield* increment(`effect:${chatKey}`, 1)
      yield* call("answerCallbackQuery", { callback_query_id: query.id, text: `Now ${count}` })
      yield* call("editMessageText", {
        chat_id: message.chat.id,
        message_id: message.message_id,
        text: `Count: ${count}`,
        reply_markup: effectKeyboard
      })
    })
  })
]
