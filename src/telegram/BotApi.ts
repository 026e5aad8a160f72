import { Api, type ApiClientOptions, GrammyError, HttpError, type RawApi } from "grammy"
import type { ApiMethods, Message, Opts, WebhookInfo } from "grammy/types"
import { Cause, Context, Data, Duration, Effect, Exit, Layer, Metric, Option, Redacted, Schedule, Schema } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"
import { botApiFetch } from "./HttpFetch.ts"
import { redactUrls } from "./RedactUrls.ts"

/** A Bot API method name, as grammY's `RawApi` knows them. */
export type Method = keyof RawApi

/** What `method` answers with once grammY has unwrapped `{ ok: true, result }`. */
export type MethodResult<M extends Method> = ReturnType<ApiMethods[M]>

/** The payload argument: optional when every parameter of `method` is optional. */
export type MethodArgs<M extends Method> = {} extends Opts<M> ? [payload?: Opts<M>] : [payload: Opts<M>]

export class ChatBlocked extends Schema.TaggedError<ChatBlocked>()("ChatBlocked", {
  method: Schema.String,
  description: Schema.String,
  chatId: Schema.optional(Schema.Union([Schema.Number, Schema.String]))
}) {
  override get message(): string {
    return `${this.method}${this.chatId === undefined ? "" : ` to chat ${this.chatId}`} refused: ${this.description}`
  }
}

export class BotApiRejected extends Schema.TaggedError<BotApiRejected>()("BotApiRejected", {
  method: Schema.String,
  errorCode: Schema.Number,
  description: Schema.String
}) {
  override get message(): string {
    return `${this.method} rejected (${this.errorCode}): ${this.description}`
  }
}

export class BotApiUnavailable extends Schema.TaggedError<BotApiUnavailable>()("BotApiUnavailable", {
  method: Schema.String,
  reason: Schema.String,
  /** Telegram's flood wait (429 retry_after) when it was too long to wait for in place. */
  retryAfterSeconds: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    return `${this.method} failed after retries: ${this.reason}`
  }
}

export type BotApiError = ChatBlocked | BotApiRejected | BotApiUnavailable

/**
 * The longest 429 `retry_after` a call waits for in place. A longer flood wait ends the call with
 * `BotApiUnavailable` carrying it: the sender then puts the call back in the outbox for that long,
 * holding no lease, no fiber and no connection while Telegram makes it wait.
 */
export const MAX_IN_PLACE_FLOOD_WAIT = Duration.seconds(5)

/** One failed attempt that may succeed when repeated; never leaves this module. */
class Transient extends Data.TaggedError("BotApiTransient")<{
  readonly reason: string
  readonly retryAfter?: Duration.Duration
}> {}

/** Scrubs URLs (to scheme and host), a bot token and any `/bot<token>/` segment out of text copied from a foreign error. */
export const redactToken = (text: string, token: string): string => {
  let scrubbed = redactUrls(text).replace(/\/bot[^/\s]+\//g, "/bot<redacted>/")
  for (const variant of new Set([token, encodeURIComponent(token)])) {
    if (variant !== "") scrubbed = scrubbed.split(variant).join("<redacted>")
  }
  return scrubbed
}

type ParamlessMethod = {
  [M in keyof ApiMethods]: Parameters<ApiMethods[M]>[0] extends undefined ? M : never
}[keyof ApiMethods]

// grammY's `raw` proxy pre-binds an empty payload for these methods, so they take only the signal.
// `satisfies` keeps this list equal to the methods that have no parameters in grammY's types.
const paramless: Record<string, true | undefined> = {
  getMe: true,
  getWebhookInfo: true,
  getForumTopicIconStickers: true,
  getAvailableGifts: true,
  logOut: true,
  close: true,
  getMyStarBalance: true,
  removeMyProfilePhoto: true
} satisfies Record<ParamlessMethod, true>

type RawCall = (...args: ReadonlyArray<unknown>) => Promise<unknown>

/** Calls `method` through a grammY client by name, as its typed methods would. */
export const callClient = (api: Api, method: string, payload: unknown, signal?: unknown): Promise<unknown> => {
  const raw = (api.raw as unknown as Record<string, RawCall>)[method]!
  return paramless[method] ? raw(signal) : raw(payload ?? {}, signal)
}

/**
 * grammY's own client on the service's token and Bot API root, over `node:http`: the service's
 * calls, and calls made outside any update (start-up hooks), which grammY makes as usual.
 */
export const grammyClient = (endpoint: BotApiEndpoint): Api =>
  new Api(Redacted.value(endpoint.token), {
    apiRoot: endpoint.apiRoot,
    timeoutSeconds: endpoint.timeoutSeconds,
    // grammY types `fetch` as node-fetch's; it uses only what botApiFetch implements.
    fetch: botApiFetch as unknown as NonNullable<ApiClientOptions["fetch"]>
  })

const chatIdOf = (payload: unknown): number | string | undefined => {
  if (typeof payload !== "object" || payload === null || !("chat_id" in payload)) return undefined
  const chatId = payload.chat_id
  return typeof chatId === "number" || typeof chatId === "string" ? chatId : undefined
}

const toChatId = (chatId: number | string | bigint): number | string =>
  typeof chatId !== "bigint" ? chatId : Number.isSafeInteger(Number(chatId)) ? Number(chatId) : chatId.toString()

const errorText = (error: unknown): string => {
  if (error instanceof HttpError) {
    const inner = error.error instanceof Error ? `: ${error.error.message}` : ""
    return `${error.message}${inner}`
  }
  return error instanceof Error ? error.message : String(error)
}

/**
 * What a failed call means: refused for this chat (403), refused (other 4xx), or transient (429,
 * 5xx, network, timeout), with Telegram's words and never the token.
 */
const classifyFailure = (method: string, payload: unknown, error: unknown, token: string): ChatBlocked | BotApiRejected | Transient => {
  if (error instanceof GrammyError) {
    const description = redactToken(error.description, token)
    const code = error.error_code
    if (code === 429) {
      const retryAfter = error.parameters.retry_after
      return new Transient({
        reason: `429: ${description}`,
        ...(retryAfter !== undefined ? { retryAfter: Duration.seconds(retryAfter) } : {})
      })
    }
    if (code >= 500) return new Transient({ reason: `${code}: ${description}` })
    if (code === 403) {
      const chatId = chatIdOf(payload)
      return new ChatBlocked({ method, description, ...(chatId !== undefined ? { chatId } : {}) })
    }
    return new BotApiRejected({ method, errorCode: code, description })
  }
  return new Transient({ reason: redactToken(errorText(error), token) })
}

/** A grammY failure (GrammyError, HttpError) as the typed error a handler can act on. */
export const toBotApiError = (method: string, payload: unknown, error: unknown, token: Redacted.Redacted<string>): BotApiError => {
  const failure = classifyFailure(method, payload, error, Redacted.value(token))
  return failure._tag !== "BotApiTransient" ? failure : new BotApiUnavailable({
    method,
    reason: failure.reason,
    ...(failure.retryAfter === undefined ? {} : { retryAfterSeconds: Duration.toSeconds(failure.retryAfter) })
  })
}

// Exponential backoff with jitter for 5xx, network errors and timeouts; a 429 waits exactly
// the retry_after Telegram asked for, since retrying earlier only extends the flood wait.
const schedule = Schedule.exponential("200 millis", 2).pipe(
  Schedule.setInputType<ChatBlocked | BotApiRejected | Transient>(),
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(5)))),
  Schedule.jittered,
  Schedule.modifyDelay(({ input, duration }) =>
    Effect.succeed(input._tag === "BotApiTransient" && input.retryAfter !== undefined ? input.retryAfter : duration)
  )
)

const botApiDurationBy = Metrics.tagged(Metrics.botApiDuration)

const outcomeOf = (exit: Exit.Exit<unknown, ChatBlocked | BotApiRejected | Transient>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isNone(error)) return Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : "defect"
  const failure = error.value
  return failure._tag === "ChatBlocked" ?
    "blocked"
    : failure._tag === "BotApiRejected" ?
    "rejected"
    : failure.reason.startsWith("429") ?
    "rate_limited"
    : "unavailable"
}

/** Records each attempt's duration by method and outcome, and counts 429 answers. */
const measured = (method: string) => <A, R>(attempt: Effect.Effect<A, ChatBlocked | BotApiRejected | Transient, R>) =>
  Effect.suspend(() => {
    const startedAt = performance.now()
    return Effect.onExit(attempt, (exit) => {
      const outcome = outcomeOf(exit)
      return Effect.andThen(
        Metric.update(
          botApiDurationBy({ "telegram.method": method, outcome }),
          (performance.now() - startedAt) / 1000
        ),
        outcome === "rate_limited" ? Metric.update(Metrics.botApiRateLimited, 1) : Effect.void
      )
    })
  })

/** Where and how the Bot API is reached, for grammY clients built per update. */
export interface BotApiEndpoint {
  readonly token: Redacted.Redacted<string>
  readonly apiRoot: string
  readonly timeoutSeconds: number
}

export class BotApi extends Context.Service<BotApi, {
  readonly endpoint: BotApiEndpoint
  /** Calls any Bot API method with timeout, retries and typed failures. */
  readonly call: <M extends Method>(method: M, ...args: MethodArgs<M>) => Effect.Effect<MethodResult<M>, BotApiError>
  /** Calls a method named at run time (e.g. read back from the outbox); the answer is not typed. */
  readonly callRaw: (method: string, payload: Record<string, unknown>) => Effect.Effect<unknown, BotApiError>
  /** Sends a text message to a chat. */
  readonly sendMessage: (
    chatId: number | string | bigint,
    text: string,
    other?: Omit<Opts<"sendMessage">, "chat_id" | "text">
  ) => Effect.Effect<Message.TextMessage, BotApiError>
  /** Reads the webhook status Telegram reports (pending updates, last delivery error). */
  readonly getWebhookInfo: () => Effect.Effect<WebhookInfo, BotApiError>
  /** Registers the webhook URL with Telegram. */
  readonly setWebhook: (url: string, other?: Omit<Opts<"setWebhook">, "url">) => Effect.Effect<true, BotApiError>
}>()("steadfast/telegram/BotApi") {
  static make(options: {
    readonly token: Redacted.Redacted<string>
    readonly apiRoot: string
    readonly callTimeout?: Duration.Input
    readonly maxRetries?: number
  }): Effect.Effect<BotApi["Service"]> {
    return Effect.sync(() => {
      const callTimeout = Duration.fromInputUnsafe(options.callTimeout ?? "10 seconds")
      const endpoint = { token: options.token, apiRoot: options.apiRoot, timeoutSeconds: Duration.toSeconds(callTimeout) }
      // grammY's own timer is the call's timeout: it aborts the request, and its error is transient.
      // (An Effect timeout would race two more fibers against every call.)
      return BotApi.over(grammyClient(endpoint), endpoint, options.maxRetries ?? 4)
    })
  }

  /** The service over grammY's client, with retries in place, metrics and a span per call. */
  private static over(api: Api, endpoint: BotApiEndpoint, maxRetries: number): BotApi["Service"] {
    const token = Redacted.value(endpoint.token)
    // During an outage every attempt of every call fails: one warning per interval, not per attempt.
    const transientFailures = repeatedWarning("Bot API calls failing (5xx, 429, network); retrying")
    const classify = (method: string, payload: unknown, error: unknown) => classifyFailure(method, payload, error, token)

    const retriable = (error: ChatBlocked | BotApiRejected | Transient): boolean =>
      error._tag === "BotApiTransient" &&
      (error.retryAfter === undefined || Duration.isLessThanOrEqualTo(error.retryAfter, MAX_IN_PLACE_FLOOD_WAIT))

    const invoke = (method: string, payload: unknown): Effect.Effect<unknown, BotApiError> => {
      const attempt = Effect.tryPromise({
        // The native signal works at runtime; grammY types it with the abort-controller polyfill.
        try: (signal) => callClient(api, method, payload, signal),
        catch: (error) => classify(method, payload, error)
      }).pipe(
        Effect.tapError((error) =>
          error._tag === "BotApiTransient" ? transientFailures.warn(Cause.fail(error), `${method}: ${error.reason}`) : Effect.void
        ),
        measured(method),
        Effect.withSpan(`BotApi.${method}`, { kind: "client", attributes: { "telegram.method": method } })
      )
      return attempt.pipe(
        // The retry is set up only once the first attempt has failed (on the hot path it would cost
        // more than the call's own bookkeeping). It starts from that failure: the schedule's first
        // input is the first error, as if the retry had wrapped the first attempt.
        Effect.catchIf(retriable, (first) => {
          let replayed = false
          const again = Effect.suspend(() => {
            if (replayed) return attempt
            replayed = true
            return Effect.fail(first)
          })
          return Effect.retry(again, { schedule, times: maxRetries, while: retriable })
        }),
        Effect.catchTag("BotApiTransient", (error) =>
          Effect.fail(
            new BotApiUnavailable({
              method,
              reason: error.reason,
              ...(error.retryAfter === undefined ? {} : { retryAfterSeconds: Duration.toSeconds(error.retryAfter) })
            })
          ))
      )
    }

    return BotApi.ofCalls(endpoint, invoke)
  }

  /** The service over a function that makes any call: the service's own client, or an update's attempt. */
  static ofCalls(
    endpoint: BotApiEndpoint,
    callRaw: (method: string, payload: Record<string, unknown>) => Effect.Effect<unknown, BotApiError>
  ): BotApi["Service"] {
    // grammY resolves with the unwrapped `result` of the method it was asked for.
    const call = <M extends Method>(method: M, ...args: MethodArgs<M>) =>
      Effect.map(callRaw(method, args[0] ?? {}), (result) => result as MethodResult<M>)
    return BotApi.of({
      endpoint,
      call,
      callRaw,
      sendMessage: (chatId, text, other) => call("sendMessage", { ...other, chat_id: toChatId(chatId), text }),
      getWebhookInfo: () => call("getWebhookInfo"),
      setWebhook: (url, other) => call("setWebhook", { ...other, url })
    })
  }

  static layer(options: Parameters<typeof BotApi.make>[0]) {
    return Layer.effect(BotApi, BotApi.make(options))
  }
}
