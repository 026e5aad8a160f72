import { Api, Bot as GrammyBot, BotError, GrammyError, type MiddlewareFn, type MiddlewareObj, type Transformer } from "grammy"
import type { ApiResponse, Update, UserFromGetMe } from "grammy/types"
import { Context, Effect, Layer, Option, Ref, Semaphore } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { AppConfig } from "../Config.ts"
import { currentTraceparent } from "../observability/TraceContext.ts"
import { BotApi, BotApiUnavailable, callClient, grammyClient } from "../telegram/BotApi.ts"
import { SendRate } from "../telegram/SendRate.ts"
import { chatKeyOf, invalidReason, isUpdateKind } from "../telegram/Update.ts"
import type { OutgoingCall } from "../telegram/OutgoingCall.ts"
import type { RecordedCall } from "../telegram/RecordedCall.ts"
import { type AttemptApi, makeAttemptApi } from "./AttemptApi.ts"
import { type GrammyEntry, runGrammy, type SteadfastContext, updateScope } from "./Grammy.ts"
import { type Handler, type HandlerContext, type HandlerError, InvalidUpdate } from "./Handler.ts"
import { safePayload } from "./SafeText.ts"

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
export type BotEntry = Handler | MiddlewareObj<never> | GrammyBot<never>

/** The bot: its entries, tried in order for every update. */
export type BotDefinition = ReadonlyArray<BotEntry>

export interface BotOptions {
  /**
   * Runs once at start with a client that calls Telegram directly (not part of any update), e.g.
   * `(api) => api.setMyCommands([...])`. A failure is logged; the service still starts.
   */
  readonly onStart?: (api: Api) => Promise<unknown>
}

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

/**
 * A transformer that hands every call to `client` and answers with its outcome, as grammY's own
 * client would: a refusal as Telegram's error object, a network failure thrown.
 */
const through = (client: () => Api): Transformer => (_prev, method, payload, signal) =>
  callClient(client(), method, payload, signal).then(
    (result): ApiResponse<unknown> => ({ ok: true, result }),
    (error: unknown): ApiResponse<unknown> => {
      if (!(error instanceof GrammyError)) throw error
      return { ok: false, error_code: error.error_code, description: error.description, parameters: error.parameters }
    }
  ) as ReturnType<Transformer>

/**
 * A developer's own grammY `Bot`: its middleware, `bot.catch` and `bot.api` transformers apply to
 * every update; `bot.api` itself is routed to the attempt running (its calls are recorded like
 * `ctx.api`'s), and outside any update to the service's own client.
 */
const adoptBot = (bot: GrammyBot<never>, direct: Api): GrammyEntry => {
  const route = through(() => updateScope.getStore()?.api ?? direct)
  bot.api.config.use(route)
  return {
    middleware: bot.middleware() as unknown as MiddlewareFn<SteadfastContext>,
    errorHandler: (error, ctx) => Promise.resolve(bot.errorHandler(new BotError(error, ctx as never))),
    // Everything installed on bot.api but the routing above, which would route back to itself.
    transformers: () => bot.api.config.installedTransformers().filter((transformer) => transformer !== route)
  }
}

/** Routes a claimed update through the bot's entries, inside the caller's transaction. */
export class Bot extends Context.Service<Bot, {
  /** Starts an attempt's Bot API client, given the calls earlier attempts recorded. */
  readonly attempt: (recorded: ReadonlyArray<RecordedCall>) => Effect.Effect<AttemptApi>
  /** Runs the update through the entries; calls made at once are in `attempt`, after-commit calls in the result. */
  readonly handle: (
    updateId: number,
    kind: string,
    payload: unknown,
    attempt: AttemptApi
  ) => Effect.Effect<HandleResult, HandlerError>
  /** The bot's own user, from getMe (fetched once, at start or on the first update that needs it). */
  readonly me: Effect.Effect<UserFromGetMe, BotApiUnavailable>
}>()("steadfast/bot/Bot") {
  static readonly layerWith = (definition: BotDefinition, options: BotOptions = {}) =>
    Layer.effect(
      Bot,
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const botApi = yield* BotApi
        const config = yield* AppConfig
        const { throttle } = yield* SendRate
        // For calls outside any update: grammY's client on the service's token, not recorded.
        const direct = grammyClient(botApi.endpoint)
        const entries = definition.map((entry, index) =>
          isHandler(entry)
            ? entry
            : entry instanceof GrammyBot
            ? { name: `bot#${index}`, ...adoptBot(entry, direct) }
            : {
              name: `grammy#${index}`,
              middleware: entry.middleware() as unknown as MiddlewareFn<SteadfastContext>,
              transformers: () => []
            }
        )

        // One getMe at a time: updates arriving while it is asked wait for that answer instead of
        // asking again; a failure is not kept, so the next update asks anew. Not knowing who we are
        // is an outage of the Bot API, never a fault of the update.
        const cachedMe = yield* Ref.make(Option.none<UserFromGetMe>())
        const fetching = yield* Semaphore.make(1)
        const fetchMe = Effect.flatMap(
          Ref.get(cachedMe),
          Option.match({
            onSome: Effect.succeed,
            onNone: () =>
              botApi.call("getMe").pipe(
                Effect.tap((user) => Ref.set(cachedMe, Option.some(user))),
                Effect.mapError((error) =>
                  error._tag === "BotApiUnavailable" ? error : new BotApiUnavailable({ method: "getMe", reason: error.message })
                )
              )
          })
        )
        const me = Effect.flatMap(Ref.get(cachedMe), Option.match({ onSome: Effect.succeed, onNone: () => fetching.withPermit(fetchMe) }))
        // Commands addressed to another bot are told apart by our username: ask for it once, now.
        yield* Effect.forkScoped(
          me.pipe(Effect.catchCause((cause) => Effect.logWarning("getMe failed at start; asked again on the first update", cause)))
        )
        for (const entry of definition) {
          if (entry instanceof GrammyBot) {
            yield* Effect.forkScoped(Effect.map(me, (user) => void (entry.botInfo = user)).pipe(Effect.ignore))
          }
        }
        if (options.onStart !== undefined) {
          const onStart = options.onStart
          yield* Effect.tryPromise(() => onStart(direct)).pipe(
            Effect.catchCause((cause) => Effect.logWarning("the bot's start-up hook failed", cause)),
            Effect.forkScoped
          )
        }

        const attempt = (recorded: ReadonlyArray<RecordedCall>) => makeAttemptApi({ endpoint: botApi.endpoint, recorded, throttle })

        const handle = Effect.fnUntraced(function*(updateId: number, kind: string, payload: unknown, calls: AttemptApi) {
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
          const queued: Array<OutgoingCall> = []
          const queue = (method: string, callPayload: object, key?: string) =>
            Effect.map(currentTraceparent, (traceparent) =>
              void queued.push({
                chatKey: key ?? chatIdKey(callPayload) ?? chatKey,
                method,
                payload: safePayload(method, callPayload),
                traceparent
              }))
          const noChat = () => Effect.die(new Error(`update ${updateId} has no chat to reply to`))
          // The attempt's calls, typed, for Effect handlers.
          const attemptApi = BotApi.ofCalls(botApi.endpoint, calls.call)
          const context: HandlerContext = {
            update,
            me: bot,
            chatKey,
            chatId,
            reply: (text, other) => chatId === undefined ? noChat() : attemptApi.sendMessage(chatId, text, other),
            call: (method, ...args) => attemptApi.call(method, ...args),
            afterCommit: {
              call: (method, callPayload, key) => queue(method, callPayload, key),
              reply: (text, other) => chatId === undefined ? noChat() : queue("sendMessage", { ...other, chat_id: chatId, text })
            }
          }

          for (const entry of entries) {
            if ("handle" in entry) {
              if (!entry.matches(update, bot)) continue
              yield* entry.handle(context).pipe(
                Effect.provideService(SqlClient, unitSql),
                Effect.provideService(BotApi, attemptApi),
                Effect.provideService(AppConfig, config)
              )
              return { status: "done", handler: entry.name, calls: queued } satisfies HandleResult
            }
            const handled = yield* runGrammy(entry, { update, me: bot, attempt: calls, queue }).pipe(
              Effect.provideService(SqlClient, unitSql)
            )
            if (handled) return { status: "done", handler: entry.name, calls: queued } satisfies HandleResult
          }
          // Nothing took it; calls made or queued by middleware that then passed it on still count.
          return queued.length === 0 ? SKIPPED : { status: "done", handler: undefined, calls: queued } satisfies HandleResult
        })
        return Bot.of({ attempt, handle, me })
      })
    )
}
