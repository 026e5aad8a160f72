// The shipped bot's own commands, in Effect style: /start records the user, /help lists the
// commands, and any other text is quoted back.
import { Composer } from "grammy"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { type Handler, isCommand, isForAnotherBot, makeHandler } from "../Handler.ts"
import type { SteadfastContext } from "../Grammy.ts"
import { LIMITS, truncate } from "../SafeText.ts"

export const start = makeHandler({
  name: "start",
  help: "/start - say hello and register",
  matches: isCommand("start"),
  handle: Effect.fn("Handler.start")(function*({ update, reply }) {
    const sql = yield* SqlClient
    const from = update.message?.from
    if (from !== undefined) {
      yield* sql`
        INSERT INTO users (telegram_id, username, first_name, language_code)
        VALUES (${BigInt(from.id)}, ${from.username ?? null}, ${from.first_name}, ${from.language_code ?? null})
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

/** /help listing the `help` lines of `handlers`, so a feature's commands come and go with it. */
export const help = (handlers: ReadonlyArray<Handler>) =>
  makeHandler({
    name: "help",
    matches: isCommand("help"),
    handle: ({ reply }) =>
      reply(["Here is what I understand:", ...handlers.flatMap((handler) => handler.help ?? []), "/help - this list"].join("\n"))
  })

const FALLBACK_PREFIX = "I don't understand “"
const FALLBACK_SUFFIX = "”. Try /help"

/** The reply that quotes `text`, cut on a character boundary so that the whole reply fits one message. */
export const fallbackReply = (text: string): string =>
  `${FALLBACK_PREFIX}${truncate(text, LIMITS.messageText - FALLBACK_PREFIX.length - FALLBACK_SUFFIX.length)}${FALLBACK_SUFFIX}`

// Last: any text no other handler claimed (but not a command meant for another bot in a group).
export const fallback = makeHandler({
  name: "fallback",
  matches: (update, me) => update.message?.text !== undefined && !isForAnotherBot(update, me),
  handle: Effect.fn("Handler.fallback")(function*({ update, reply }) {
    yield* reply(fallbackReply(update.message?.text ?? ""))
  })
})

/** The same fallback as grammY middleware (the benchmark compares the two styles on it). */
export const grammyFallback = new Composer<SteadfastContext>().on(
  "message:text",
  (ctx, next) => isForAnotherBot(ctx.update, ctx.me) ? next() : ctx.reply(fallbackReply(ctx.message.text))
)
