// The Bot API as one attempt of an update sees it. Every call goes to Telegram when it is made and
// answers with Telegram's result, as in plain grammY; what a re-run of the update needs is kept in
// memory and written by the statement that records the attempt's failure (PROTOCOL.md,
// "recorded-calls"): a re-run then gets the recorded result of a call it makes again instead of
// making it a second time.
import { Api, type ApiClientOptions, GrammyError, InputFile, type Transformer } from "grammy"
import type { ApiError, ApiResponse } from "grammy/types"
import { createHash } from "node:crypto"
import { Data, Duration, Effect, Exit, Metric, Redacted } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import { type BotApiEndpoint, type BotApiError, BotApiUnavailable, MAX_IN_PLACE_FLOOD_WAIT, toBotApiError } from "../telegram/BotApi.ts"
import { botApiFetch } from "../telegram/HttpFetch.ts"
import type { RecordedCall } from "../telegram/RecordedCall.ts"

/** Methods that would change how updates reach this service; a handler must not call them. */
const REFUSED_METHODS: ReadonlySet<string> = new Set(["getUpdates", "setWebhook", "deleteWebhook", "logOut", "close"])

/** Why a call was refused without reaching Telegram: the attempt that made it has ended. */
export const CALL_AFTER_ATTEMPT = "this update's attempt is over (timed out or finished): it makes no more Bot API calls"

/** What grammY's API client passes to `fetch` (see HttpFetch). */
type FetchInit = Parameters<typeof botApiFetch>[1]
type Answer = Awaited<ReturnType<typeof botApiFetch>>

/** The request never got an answer (connection refused, reset, timed out): Telegram is unreachable. */
class NoAnswer extends Data.TaggedError("NoAnswer")<{ readonly reason: string }> {}

const answerWith = (response: ApiResponse<unknown>): Answer => ({ json: () => Promise.resolve(response) })

/** A digest of what was asked: the JSON body as written (an upload's stream: its method only). */
const digestOf = (body: string | undefined): string => body === undefined ? "upload" : createHash("sha1").update(body).digest("base64url")

/** The URL without userinfo, path (it holds the token) or query: what an error may show. */
const originOf = (url: string): string => {
  const parsed = URL.parse(url)
  return parsed === null ? "the Bot API" : `${parsed.protocol}//${parsed.host}`
}

/** A bigint (a `bigint` column read with `ctx.sql`) as JSON can carry it: a number when exact, else its digits. */
const jsonSafe = (value: unknown): unknown => {
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString()
  if (Array.isArray(value)) return value.some((item) => typeof item === "bigint" || typeof item === "object") ? value.map(jsonSafe) : value
  if (typeof value !== "object" || value === null || Object.getPrototypeOf(value) !== Object.prototype) return value
  const entries = Object.entries(value)
  return entries.some(([, item]) => typeof item === "bigint" || typeof item === "object")
    ? Object.fromEntries(entries.map(([key, item]) => [key, jsonSafe(item)]))
    : value
}

/**
 * grammY cannot serialize a bigint, and fails such a call after it has started the call's timer,
 * which then rejects unheard 10 s later and takes the process down. Payloads go out without them.
 */
const withoutBigInts: Transformer = (prev, method, payload, signal) => prev(method, jsonSafe(payload) as typeof payload, signal)

const hasInputFile = (value: unknown): boolean =>
  value instanceof InputFile || (typeof value === "object" && value !== null && Object.values(value).some(hasInputFile))

const JSON_HEADERS = { "content-type": "application/json", connection: "keep-alive" }

interface MadeCall {
  readonly n: number
  readonly method: string
  readonly body: string | undefined
  readonly result: unknown
}

const botApiDurationBy = Metrics.tagged(Metrics.botApiDuration)

/** A call's outcome as the service's own client labels it in `steadfast.botapi.call.duration`. */
const outcomeOf = (response: ApiResponse<unknown>): string =>
  response.ok ?
    "ok"
    : response.error_code === 403 ?
    "blocked"
    : response.error_code === 429 ?
    "rate_limited"
    : response.error_code >= 500 ?
    "unavailable"
    : "rejected"

export interface AttemptApi {
  /** A grammY client of this attempt, without transformers; plugins building their own `Api` from its options share its calls. */
  readonly api: () => Api
  /** Any method with its payload, for Effect handlers: Telegram's result, or the typed refusal. */
  readonly call: (method: string, payload: object) => Effect.Effect<unknown, BotApiError>
  /** Refuses every further call; calls in flight finish. */
  readonly close: () => void
  /** What a re-run needs: the calls known so far, made or replayed, and those of earlier attempts it did not reach. */
  readonly record: () => ReadonlyArray<RecordedCall>
  /** Set when a call failed because Telegram could not be reached (network, 5xx, a long 429). */
  readonly unreachable: () => BotApiUnavailable | undefined
}

/**
 * Starts the calls of one attempt. `recorded` are the calls earlier attempts made; `throttle` waits
 * for the global send limit. grammY's calls run with the caller's services, so a call's span is a
 * child of the attempt's.
 */
export const makeAttemptApi = Effect.fnUntraced(function*(options: {
  readonly endpoint: BotApiEndpoint
  readonly recorded: ReadonlyArray<RecordedCall>
  readonly throttle: Effect.Effect<void>
}) {
  const services = yield* Effect.context<never>()
  const runPromise = Effect.runPromiseWith(services)
  const past = new Map(options.recorded.map((call) => [call.n, call]))
  const made: Array<MadeCall> = []
  let calls = 0
  let closed = false
  let unreachable: BotApiUnavailable | undefined
  const { apiRoot } = options.endpoint
  const token = Redacted.value(options.endpoint.token)

  const noteUnreachable = (method: string, reason: string, retryAfterSeconds?: number) => {
    unreachable = new BotApiUnavailable({ method, reason, ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }) })
  }

  // One request to Telegram: a 429 within MAX_IN_PLACE_FLOOD_WAIT is waited out and asked again (a
  // JSON body can be sent twice; an upload's stream cannot), anything else is answered as it came.
  const request = (url: string, init: FetchInit): Effect.Effect<ApiResponse<unknown>, NoAnswer> =>
    Effect.flatMap(
      Effect.andThen(
        options.throttle,
        Effect.tryPromise({
          try: () => botApiFetch(url, init).then((answer) => answer.json() as Promise<ApiResponse<unknown>>),
          // The request's own error names the URL, which holds the token: keep only its origin.
          catch: (error) =>
            new NoAnswer({
              reason: `request to ${originOf(url)} failed: ${
                error instanceof Error && error.cause instanceof Error ? error.cause.message : "no answer"
              }`
            })
        })
      ),
      (response) => {
        const retryAfter = response.ok ? undefined : response.parameters?.retry_after
        if (
          !response.ok && response.error_code === 429 && retryAfter !== undefined && typeof init.body === "string" &&
          Duration.isLessThanOrEqualTo(Duration.seconds(retryAfter), MAX_IN_PLACE_FLOOD_WAIT)
        ) {
          return Effect.andThen(
            Effect.andThen(Metric.update(Metrics.botApiRateLimited, 1), Effect.sleep(Duration.seconds(retryAfter))),
            request(url, init)
          )
        }
        return Effect.succeed(response)
      }
    )

  const measured = <E>(method: string, call: Effect.Effect<ApiResponse<unknown>, E>) =>
    Effect.suspend(() => {
      const startedAt = performance.now()
      return Effect.onExit(call, (exit) =>
        Metric.update(
          botApiDurationBy({
            "telegram.method": method,
            outcome: Exit.isFailure(exit) ? "unavailable" : outcomeOf(exit.value)
          }),
          (performance.now() - startedAt) / 1000
        ))
    })

  /** One call of this attempt, by number: the recorded result when an earlier attempt made the same call. */
  const exchange = (method: string, url: string, init: FetchInit): Effect.Effect<ApiResponse<unknown>, NoAnswer> =>
    Effect.suspend(() => {
      const n = ++calls
      const body = typeof init.body === "string" ? init.body : undefined
      const earlier = past.get(n)
      if (earlier !== undefined) {
        if (earlier.method === method && earlier.digest === digestOf(body)) {
          made.push({ n, method, body, result: earlier.result })
          return Effect.succeed({ ok: true, result: earlier.result } as const).pipe(Effect.withSpan(`BotApi.${method}`, {
            kind: "client",
            attributes: { "telegram.method": method, "steadfast.recorded": true }
          }))
        }
        // The handler asked something else this time: the call is made, and the record follows it.
        past.delete(n)
        return Effect.andThen(
          Effect.logWarning(`call ${n} of this update was ${earlier.method} before and is ${method} now: made again`),
          send(n, method, url, init, body)
        )
      }
      return send(n, method, url, init, body)
    })

  const send = (n: number, method: string, url: string, init: FetchInit, body: string | undefined) => {
    if (closed) return Effect.die(new Error(CALL_AFTER_ATTEMPT))
    if (REFUSED_METHODS.has(method)) {
      return Effect.succeed<ApiResponse<unknown>>({
        ok: false,
        error_code: 400,
        description: `${method} is managed by steadfast, not by handlers`
      })
    }
    return request(url, init).pipe(
      (call) => measured(method, call),
      Effect.tap((response) =>
        Effect.sync(() => {
          if (response.ok) made.push({ n, method, body, result: response.result })
          else if (response.error_code >= 500 || response.error_code === 429) {
            noteUnreachable(method, `${response.error_code}: ${response.description}`, response.parameters?.retry_after)
          }
        })
      ),
      Effect.tapError((error) => Effect.sync(() => noteUnreachable(method, error.reason))),
      Effect.withSpan(`BotApi.${method}`, { kind: "client", attributes: { "telegram.method": method } })
    )
  }

  const fetch = (url: string, init: FetchInit): Promise<Answer> =>
    runPromise(
      exchange(url.slice(url.lastIndexOf("/") + 1), url, init).pipe(
        Effect.map(answerWith),
        // grammY reports a rejected fetch as an HttpError, as plain grammY does for a network failure.
        Effect.catchTag("NoAnswer", (error) => Effect.die(new Error(error.reason)))
      )
    )

  const clientOptions: ApiClientOptions = {
    apiRoot,
    timeoutSeconds: options.endpoint.timeoutSeconds,
    // grammY types `fetch` as node-fetch's; it uses only what botApiFetch implements.
    fetch: fetch as unknown as NonNullable<ApiClientOptions["fetch"]>
  }
  const api = () => {
    const client = new Api(token, clientOptions)
    client.config.use(withoutBigInts)
    return client
  }

  // Effect handlers' calls skip grammY's client for JSON payloads: the same exchange, no promise.
  const call = (method: string, payload: object): Effect.Effect<unknown, BotApiError> => {
    if (hasInputFile(payload)) {
      return Effect.tryPromise({
        try: () => (api().raw as unknown as Record<string, (payload: object) => Promise<unknown>>)[method]!(payload),
        catch: (error) => toBotApiError(method, payload, error, options.endpoint.token)
      })
    }
    return exchange(method, `${apiRoot}/bot${token}/${method}`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify(jsonSafe(payload))
    }).pipe(
      Effect.catchTag("NoAnswer", (error) => Effect.fail(new BotApiUnavailable({ method, reason: error.reason }))),
      Effect.flatMap((response) =>
        response.ok ? Effect.succeed(response.result) : Effect.fail(
          toBotApiError(
            method,
            payload,
            new GrammyError(`Call to '${method}' failed!`, response as ApiError, method, payload as Record<string, unknown>),
            options.endpoint.token
          )
        )
      )
    )
  }

  return {
    api,
    call,
    close: () => {
      closed = true
    },
    record: () => {
      const known = new Map(past)
      for (const done of made) known.set(done.n, { n: done.n, method: done.method, digest: digestOf(done.body), result: done.result })
      return Array.from(known.values()).sort((a, b) => a.n - b.n)
    },
    unreachable: () => unreachable
  } satisfies AttemptApi
})
