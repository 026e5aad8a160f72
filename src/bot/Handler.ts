import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { AppConfig } from "../Config.ts"
import type { BotApi } from "../telegram/BotApi.ts"
import type { Update } from "../telegram/Update.ts"

/** A handler's own failure: the update's transaction rolls back and the update is retried. */
export class HandlerFailure extends Schema.TaggedError<HandlerFailure>()("HandlerFailure", {
  reason: Schema.String
}) {
  // Without it the message is empty, and the reason never reaches the log or the inbox's last_error.
  override get message() {
    return this.reason
  }
}

export interface HandlerContext {
  readonly update: Update
  /** The key this update is ordered by, e.g. `chat:42`. */
  readonly chatKey: string
  /** The chat the update came from, when it has one. */
  readonly chatId: number | undefined
  /** Queues `sendMessage` to the update's chat; it is sent only if the transaction commits. */
  readonly reply: (text: string, other?: Record<string, unknown>) => Effect.Effect<void, SqlError | HandlerFailure>
  /** Queues any Bot API call, sent in order with the other calls for `chatKey`. */
  readonly call: (method: string, payload: Record<string, unknown>, chatKey?: string) => Effect.Effect<void, SqlError>
}

/**
 * What a handler may `yield*`. `SqlClient` is the update's transaction. `BotApi` calls Telegram
 * at once, bypassing the outbox: only for calls that must happen before the transaction commits
 * or must not wait behind queued messages (answerPreCheckoutQuery, refundStarPayment); a reply
 * goes through `reply`/`call`, so it is sent only if the transaction commits.
 */
export type HandlerServices = SqlClient | BotApi | AppConfig

/**
 * A bot feature. `handle` runs inside the update's transaction: `yield* SqlClient` there gives
 * the transaction's connection, and everything it writes commits together with the update's
 * `done` mark, or not at all.
 */
export interface Handler {
  readonly name: string
  /** Handlers are tried in ascending order; the first whose `matches` is true handles the update. */
  readonly order: number
  readonly matches: (update: Update) => boolean
  readonly handle: (context: HandlerContext) => Effect.Effect<void, HandlerFailure | SqlError, HandlerServices>
}

export const makeHandler = (handler: Handler): Handler => handler

/** True for a message whose text is `/name`, `/name args` or `/name@bot ...`. */
export const isCommand = (name: string) => (update: Update): boolean => {
  const text = update.message?.text
  if (text === undefined) return false
  const word = text.trimStart().split(/\s/, 1)[0] ?? ""
  return word === `/${name}` || word.startsWith(`/${name}@`)
}

export const commandArgument = (update: Update): string =>
  (update.message?.text ?? "").trimStart().replace(/^\S+\s*/, "").trim()
