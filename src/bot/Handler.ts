import type { Message, Opts, Update, UserFromGetMe } from "grammy/types"
import { type Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { AppConfig } from "../Config.ts"
import type { BotApi, BotApiError, Method, MethodArgs, MethodResult } from "../telegram/BotApi.ts"

/** A handler's own failure: the update's transaction rolls back and the update is retried. */
export class HandlerFailure extends Schema.TaggedError<HandlerFailure>()("HandlerFailure", {
  reason: Schema.String
}) {
  // Without it the message is empty, and the reason never reaches the log or the inbox's last_error.
  override get message() {
    return this.reason
  }
}

/**
 * An update of a known kind without what the pipeline or its handler needs (a `message` without
 * `chat`, a successful_payment the payments handler cannot read): never silently skipped.
 */
export class InvalidUpdate extends Schema.TaggedError<InvalidUpdate>()("InvalidUpdate", {
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

/** The extras of `sendMessage`: everything but the chat and the text. */
export type ReplyExtras = Omit<Opts<"sendMessage">, "chat_id" | "text">

/** Calls sent only once the update's transaction commits, in order per chat; nothing comes back. */
export interface AfterCommit {
  /** Queues `sendMessage` to the update's chat (text cut to Telegram's limit on a character boundary). */
  readonly reply: (text: string, other?: ReplyExtras) => Effect.Effect<void>
  /** Queues any Bot API call, typed by method, in order with the other calls for `chatKey`. */
  readonly call: <M extends Method>(method: M, payload: Opts<M>, chatKey?: string) => Effect.Effect<void>
}

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
   * Sends a message to the update's chat now and answers with it, as grammY's `ctx.reply`. Recorded:
   * a re-run of the update gets this Message back instead of sending it again.
   */
  readonly reply: (text: string, other?: ReplyExtras) => Effect.Effect<Message.TextMessage, BotApiError>
  /** Calls any Bot API method now, typed by method, and answers with Telegram's result; recorded like `reply`. */
  readonly call: <M extends Method>(method: M, ...args: MethodArgs<M>) => Effect.Effect<MethodResult<M>, BotApiError>
  /** Calls that must go out only if the update's transaction commits. */
  readonly afterCommit: AfterCommit
}

/**
 * What a handler may `yield*`. `SqlClient` is the update's transaction. `BotApi` is the update's
 * attempt client: its calls are made at once and recorded, like `call`.
 */
export type HandlerServices = SqlClient | BotApi | AppConfig

/**
 * The failures a handler may end with: each rolls the update's transaction back. A lost database
 * connection (SqlError) or an unreachable Bot API (BotApiUnavailable) is retried without counting
 * toward MAX_ATTEMPTS; a chat that blocked the bot (ChatBlocked) ends the update skipped; an
 * invalid update is dead-lettered at once; any other failure counts.
 */
export type HandlerError = HandlerFailure | InvalidUpdate | SqlError | BotApiError

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
