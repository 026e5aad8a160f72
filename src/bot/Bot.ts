import type { MiddlewareFn, MiddlewareObj } from "grammy"
import type { Update, UserFromGetMe } from "grammy/types"
import { Context, Effect, Layer, Option, Ref, Schema, Semaphore } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { AppConfig } from "../Config.ts"
import { currentTraceparent } from "../observability/TraceContext.ts"
import type { OutgoingCall } from "../outbox/Outbox.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { chatKeyOf, invalidReason, isUpdateKind } from "../telegram/Update.ts"
import { runGrammy, type SteadfastContext } from "./Grammy.ts"
import { type Handler, type HandlerContext, type HandlerError, HandlerFailure } from "./Handler.ts"
import { safePayload } from "./SafeText.ts"

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

export interface HandleResult {
  readonly status: "done" | "skipped"
  readonly handler: string | undefined
  /** Bot API calls to queue in the outbox, in order, when the update's transaction commits. */
  readonly calls: ReadonlyArray<OutgoingCall>
}

/**
 * One entry of a bot: an Effect handler, or grammY middleware (a `Composer`, or anything with
 * `middleware()`). `MiddlewareObj<never>` admits a Composer of any context type; grammY's own
 * `Bot<C>` trusts its context the same way, since flavors such as sessions are added at run time.
 */
export type BotEntry = Handler | MiddlewareObj<never>

/** The bot: its entries, tried in order for every update. */
export type BotDefinition = ReadonlyArray<BotEntry>

const isHandler = (entry: BotEntry): entry is Handler => "handle" in entry

const SKIPPED: HandleResult = { status: "skipped", handler: undefined, calls: [] }

/** The chat a reply to this update goes to, for the kinds that have one. */
const chatIdOf = (update: Update): number | undefined =>
  (update.message ?? update.edited_message ?? update.channel_post ?? update.edited_channel_post ?? update.business_message ??
    update.callback_query?.message ?? update.my_chat_member ?? update.chat_member ?? update.chat_join_request)?.chat.id

const chatIdKey = (payload: object): string | undefined => {
  const chatId = "chat_id" in payload ? payload.chat_id : undefined
  return typeof chatId === "number" || typeof chatId === "string" ? `chat:${chatId}` : undefined
}

/** Routes a claimed update through the bot's entries, inside the caller's transaction. */
export class Bot extends Context.Service<Bot, {
  /** Runs the update through the entries; the calls it queued are in the result, not yet sent. */
  readonly handle: (updateId: number, kind: string, payload: unknown) => Effect.Effect<HandleResult, HandlerError>
  /** The bot's own user, from getMe (fetched once, at start or on the first update that needs it). */
  readonly me: Effect.Effect<UserFromGetMe, HandlerFailure>
}>()("steadfast/bot/Bot") {
  static readonly layerWith = (definition: BotDefinition) =>
    Layer.effect(
      Bot,
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const botApi = yield* BotApi
        const config = yield* AppConfig
        const entries = definition.map((entry, index) =>
          isHandler(entry)
            ? entry
            : { name: `grammy#${index}`, middleware: entry.middleware() as unknown as MiddlewareFn<SteadfastContext> }
        )

        // One getMe at a time: updates arriving while it is asked wait for that answer instead of
        // asking again; a failure is not kept, so the next update asks anew.
        const cachedMe = yield* Ref.make(Option.none<UserFromGetMe>())
        const fetching = yield* Semaphore.make(1)
        const fetchMe = Effect.flatMap(
          Ref.get(cachedMe),
          Option.match({
            onSome: Effect.succeed,
            onNone: () =>
              botApi.call("getMe").pipe(
                Effect.tap((user) => Ref.set(cachedMe, Option.some(user))),
                Effect.mapError((error) => new HandlerFailure({ reason: `getMe: ${error.message}` }))
              )
          })
        )
        const me = Effect.flatMap(Ref.get(cachedMe), Option.match({ onSome: Effect.succeed, onNone: () => fetching.withPermit(fetchMe) }))
        // Commands addressed to another bot are told apart by our username: ask for it once, now.
        yield* Effect.forkScoped(
          me.pipe(Effect.catchCause((cause) => Effect.logWarning("getMe failed at start; asked again on the first update", cause)))
        )

        const handle = Effect.fnUntraced(function*(updateId: number, kind: string, payload: unknown) {
          if (!isUpdateKind(kind)) return SKIPPED
          const reason = invalidReason(kind, payload)
          if (reason !== undefined) return yield* new InvalidUpdate({ reason: `update ${updateId}: ${reason}` })
          // Checked above for what the pipeline needs; handlers get everything Telegram sent.
          const update = payload as Update
          const bot = yield* me
          const chatKey = chatKeyOf(payload, kind)
          const chatId = chatIdOf(update)
          // The update's unit of work provides its own client (statements in its transaction); the
          // layer's one is the same pool, for a caller that provides none.
          const unitSql = Option.getOrElse(yield* Effect.serviceOption(SqlClient), () => sql)

          // Buffered, then written by the same statement that finishes the update (one round trip).
          const calls: Array<OutgoingCall> = []
          const queue = (method: string, callPayload: object, key?: string) =>
            Effect.map(currentTraceparent, (traceparent) =>
              void calls.push({
                chatKey: key ?? chatIdKey(callPayload) ?? chatKey,
                method,
                payload: safePayload(method, callPayload),
                traceparent
              }))
          const context: HandlerContext = {
            update,
            me: bot,
            chatKey,
            chatId,
            call: (method, callPayload, key) => queue(method, callPayload, key),
            reply: (text, other) =>
              chatId === undefined
                ? Effect.die(new Error(`update ${updateId} has no chat to reply to`))
                : queue("sendMessage", { ...other, chat_id: chatId, text })
          }

          for (const entry of entries) {
            if ("handle" in entry) {
              if (!entry.matches(update, bot)) continue
              yield* entry.handle(context).pipe(
                Effect.provideService(SqlClient, unitSql),
                Effect.provideService(BotApi, botApi),
                Effect.provideService(AppConfig, config)
              )
              return { status: "done", handler: entry.name, calls } satisfies HandleResult
            }
            const handled = yield* runGrammy(entry.middleware, { update, me: bot, queue }).pipe(
              Effect.provideService(SqlClient, unitSql),
              Effect.provideService(BotApi, botApi)
            )
            if (handled) return { status: "done", handler: entry.name, calls } satisfies HandleResult
          }
          // Nothing took it; calls queued by middleware that then passed it on are still sent.
          return calls.length === 0 ? SKIPPED : { status: "done", handler: undefined, calls } satisfies HandleResult
        })
        return Bot.of({ handle, me })
      })
    )
}
