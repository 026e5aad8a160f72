import type { Opts, Update, UserFromGetMe } from "grammy/types"
import { type Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { AppConfig } from "../Config.ts"
import type { BotApi, BotApiUnavailable, Method } from "../telegram/BotApi.ts"
import type { InvalidUpdate } from "./Bot.ts"

/** A handler's own failure: the update's transaction rolls back and the update is retried. */
export class HandlerFailure extends Schema.TaggedError<HandlerFailure>()("HandlerFailure", {
  reason: Schema.String
}) {
  // Without it the message is empty, and the reason never reaches the log or the inbox's last_error.
  override get message() {
    return this.reason
  }
}

/** The extras of `sendMessage`: everything but the chat and the text. */
export type ReplyExtras = Omit<Opts<"sendMessage">, "chat_id" | "text">

export interface HandlerContext {
  /** The update exactly as Telegram sent it. */
  readonly update: Update
  /** The bot itself, from getMe. */
  readonly me: UserFromGetMe
  /** The key this update is ordered by, e.g. `chat:42`. */
  readonly chatKey: string
  /** The chat the update came from, when it has one. */
  readonly chatId: number | undefined
  /**
   * Queues `sendMessage` to the update's chat (text cut to Telegram's limit on a character
   * boundary); it is sent only if the transaction commits.
   */
  readonly reply: (text: string, other?: ReplyExtras) => Effect.Effect<void>
  /**
   * Queues any Bot API call, typed by method, sent in order with the other calls for `chatKey`
   * once the transaction commits. Nothing comes back: the call has not happened yet.
   */
  readonly call: <M extends Method>(method: M, payload: Opts<M>, chatKey?: string) => Effect.Effect<void>
}

/**
 * What a handler may `yield*`. `SqlClient` is the update's transaction. `BotApi` calls Telegram
 * at once, bypassing the outbox: only for calls that must happen before the transaction commits
 * or must not wait behind queued messages (answerPreCheckoutQuery, refundStarPayment); a reply
 * goes through `reply`/`call`, so it is sent only if the transaction commits.
 */
export type HandlerServices = SqlClient | BotApi | AppConfig

/**
 * The failures a handler may end with: each rolls the update's transaction back. A lost database
 * connection (SqlError) or an unreachable Bot API (BotApiUnavailable) is retried without counting
 * toward MAX_ATTEMPTS; any other failure counts; InvalidUpdate is dead-lettered at once.
 */
export type HandlerError = HandlerFailure | InvalidUpdate | SqlError | BotApiUnavailable

/**
 * An Effect-style bot feature. `handle` runs inside the update's transaction: `yield* SqlClient`
 * there gives the transaction's connection, and everything it writes commits together with the
 * update's `done` mark, or not at all.
 */
export interface Handler {
  readonly name: string
  /** Its line in /help, e.g. "/balance - your credits". */
  readonly help?: string
  /** Whether this handler takes the update; the bot's list is tried in order and the first taker handles it. */
  readonly matches: (update: Update, me: UserFromGetMe) => boolean
  readonly handle: (context: HandlerContext) => Effect.Effect<void, HandlerError, HandlerServices>
}

export const makeHandler = (handler: Handler): Handler => handler

const commandWord = (update: Update): string | undefined => {
  const text = update.message?.text
  return text === undefined ? undefined : text.trimStart().split(/\s/, 1)[0]
}

/** The `@bot` a command is addressed to (`/cmd@bot`), if any; usernames compare case-insensitively. */
const addressee = (word: string): string | undefined => {
  const at = word.indexOf("@")
  return at < 0 ? undefined : word.slice(at + 1).toLowerCase()
}

/**
 * True for `/name`, `/name args` or `/name@<this bot> args`, never for `/name@other_bot`: in a
 * group, a command addressed to another bot is not ours to answer.
 */
export const isCommand = (name: string) => (update: Update, me: UserFromGetMe): boolean => {
  const word = commandWord(update)
  if (word === undefined || !word.startsWith(`/${name}`)) return false
  const rest = word.slice(name.length + 1)
  return rest === "" || (rest.startsWith("@") && addressee(rest) === me.username.toLowerCase())
}

/** A command addressed to another bot (`/cmd@other_bot`): nothing here should answer it. */
export const isForAnotherBot = (update: Update, me: UserFromGetMe): boolean => {
  const word = commandWord(update)
  if (word === undefined || !word.startsWith("/")) return false
  const to = addressee(word)
  return to !== undefined && to !== me.username.toLowerCase()
}

export const commandArgument = (update: Update): string => (update.message?.text ?? "").trimStart().replace(/^\S+\s*/, "").trim()
