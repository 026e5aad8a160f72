import { Context, Effect, Layer, Predicate, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { readdirSync } from "node:fs"
import { AppConfig } from "../Config.ts"
import { currentTraceparent } from "../observability/TraceContext.ts"
import type { OutgoingCall } from "../outbox/Outbox.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { Update, chatKeyOf } from "../telegram/Update.ts"
import type { Handler, HandlerContext, HandlerFailure } from "./Handler.ts"

export interface HandleResult {
  readonly status: "done" | "skipped"
  readonly handler: string | undefined
  /** Bot API calls to queue in the outbox, in order, when the update's transaction commits. */
  readonly calls: ReadonlyArray<OutgoingCall>
}

const decodeUpdate = Schema.decodeUnknownEffect(Update)

const isHandler = (value: unknown): value is Handler =>
  Predicate.hasProperty(value, "name") && Predicate.hasProperty(value, "handle") &&
  Predicate.hasProperty(value, "matches") && Predicate.hasProperty(value, "order")

const handlersDirectory = new URL("./handlers/", import.meta.url)

/** Every `default` export of `src/bot/handlers/*.ts`: adding a feature is adding a file there. */
export const loadHandlers = Effect.gen(function*() {
  const files = readdirSync(handlersDirectory).filter((file) => file.endsWith(".ts")).sort()
  const modules = yield* Effect.forEach(files, (file) =>
    Effect.promise(() => import(new URL(file, handlersDirectory).href) as Promise<{ readonly default?: unknown }>))
  return modules
    .map((module) => module.default)
    .filter(isHandler)
    .sort((a, b) => a.order - b.order || a.name.localeCompare(b.name))
})

/** Routes a claimed update to the first handler that wants it, inside the caller's transaction. */
export class Bot extends Context.Service<Bot, {
  readonly handlers: ReadonlyArray<Handler>
  readonly handle: (updateId: number, kind: string, payload: unknown) => Effect.Effect<HandleResult, HandlerFailure | SqlError>
}>()("steadfast/bot/Bot") {
  static readonly layerWith = (handlers: ReadonlyArray<Handler>) =>
    Layer.effect(Bot, Effect.gen(function*() {
      const sql = yield* SqlClient
      const botApi = yield* BotApi
      const config = yield* AppConfig

      const handle = Effect.fnUntraced(function*(updateId: number, kind: string, payload: unknown) {
        const decoded = yield* Effect.option(decodeUpdate(payload))
        if (decoded._tag === "None") {
          yield* Effect.logWarning(`update ${updateId} (${kind}) does not have the shape its kind requires; skipped`)
          return { status: "skipped", handler: undefined, calls: [] } satisfies HandleResult
        }
        const update = decoded.value
        const handler = handlers.find((candidate) => candidate.matches(update))
        if (handler === undefined) return { status: "skipped", handler: undefined, calls: [] } satisfies HandleResult

        const chatKey = chatKeyOf(payload, kind)
        const chatId = update.message?.chat.id ?? update.edited_message?.chat.id ?? update.callback_query?.message?.chat.id
        // Buffered, then written by the same statement that finishes the update (one round trip).
        const calls: Array<OutgoingCall> = []
        const call: HandlerContext["call"] = (method, callPayload, key = chatKey) =>
          Effect.map(currentTraceparent, (traceparent) => void calls.push({ chatKey: key, method, payload: callPayload, traceparent }))
        const context: HandlerContext = {
          update,
          chatKey,
          chatId,
          call,
          reply: (text, other) =>
            chatId === undefined
              ? Effect.die(new Error(`update ${updateId} has no chat to reply to`))
              : call("sendMessage", { ...other, chat_id: chatId, text })
        }
        yield* handler.handle(context).pipe(
          Effect.provideService(SqlClient, sql),
          Effect.provideService(BotApi, botApi),
          Effect.provideService(AppConfig, config)
        )
        return { status: "done", handler: handler.name, calls } satisfies HandleResult
      })
      return Bot.of({ handlers, handle })
    }))

  static readonly layer = Layer.unwrap(Effect.map(loadHandlers, Bot.layerWith))
}
