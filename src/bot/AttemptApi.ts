// The Bot API as one attempt of an update sees it. Every call goes to Telegram when it is made and
// answers with Telegram's result, as in plain grammY; what a re-run of the update needs is kept in
// memory and written by the statement that records the attempt's failure (PROTOCOL.md, "recorded
// calls"): a re-run then gets the recorded result of a call it makes again instead of a second call.
import { Api, type ApiClientOptions, type Transformer } from "grammy"
import type { ApiResponse } from "grammy/types"
import { createHash } from "node:crypto"
import { Cause, Duration, Effect, Exit, Metric, Redacted } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import { type BotApiEndpoint, BotApiUnavailable, MAX_IN_PLACE_FLOOD_WAIT } from "../telegram/BotApi.ts"
import { botApiFetch } from "../telegram/HttpFetch.ts"
import type { RecordedCall } from "../telegram/RecordedCall.ts"

/** Methods that would change how updates reach this service; a handler must not call them. */
const REFUSED_METHODS: ReadonlySet<string> = new Set(["getUpdates", "setWebhook", "deleteWebhook", "logOut", "close"])

/** Why a call was refused without reaching Telegram: the attempt that made it has ended. */
export const CALL_AFTER_ATTEMPT = "this update's attempt is over (timed out or finished): it makes no more Bot API calls"

/** What grammY's API client passes to `fetch` (see HttpFetch). */
type FetchInit = Parameters<typeof botApiFetch>[1]
type Answer = Awaited<ReturnType<typeof botApiFetch>>

const answerWith = (response: ApiResponse<unknown>): Answer => ({ json: () => Promise.resolve(response) })

/** A digest of what was asked: the JSON body as grammY wrote it (an upload's stream: its method only). */
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

interface MadeCall {
  readonly n: number
  readonly method: string
  readonly body: string | undefined
  readonly result: unknown
}

const botApiDurationBy = Metrics.tagged(Metrics.botApiDuration)

export interface AttemptApi {
  /** grammY's `fetch` for every client of this attempt (ctx.api, a plugin's own `Api` built from its options). */
  readonly clientOptions: ApiClientOptions
  /** A grammY client of this attempt, without transformers. */
  readonly api: () => Api
  /** Refuses every further call; calls in flight finish. */
  readonly close: () => void
  /** What a re-run needs: the calls known so far, made or replayed, and those of earlier attempts it did not reach. */
  readonly record: () => ReadonlyArray<RecordedCall>
  /** Set when a call failed because Telegram could not be reached (network, 5xx, a long 429). */
  readonly unreachable: () => BotApiUnavailable | undefined
}

/**
 * Starts the calls of one attempt. `recorded` are the calls earlier attempts made; `throttle` waits
 * for the global send limit; the effects it runs (the call's span, metrics, throttle) run with the
 * caller's services, so a call's span is a child of the attempt's.
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

  const noteUnreachable = (method: string, reason: string, retryAfterSeconds?: number) => {
    unreachable = new BotApiUnavailable({ method, reason, ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }) })
  }

  // One request to Telegram: a 429 within MAX_IN_PLACE_FLOOD_WAIT is waited out and asked again (a
  // JSON body can be sent twice; an upload's stream cannot), anything else is answered as it came.
  const request = (method: string, url: string, init: FetchInit): Effect.Effect<ApiResponse<unknown>> =>
    Effect.flatMap(
      Effect.andThen(
        options.throttle,
        Effect.tryPromise({
          try: () => botApiFetch(url, init).then((answer) => answer.json() as Promise<ApiResponse<unknown>>),
          // The request's own error names the URL, which holds the token: keep only its origin.
          catch: (error) =>
            new Error(
              `request to ${originOf(url)} failed: ${
                error instanceof Error && error.cause instanceof Error ? error.cause.message : "no answer"
              }`
            )
        })
      ),
      (response) => {
        if (response.ok) return Effect.succeed(response)
        const retryAfter = response.parameters?.retry_after
        if (
          response.error_code === 429 && retryAfter !== undefined && typeof init.body === "string" &&
          Duration.isLessThanOrEqualTo(Duration.seconds(retryAfter), MAX_IN_PLACE_FLOOD_WAIT)
        ) {
          return Effect.andThen(
            Effect.andThen(Metric.update(Metrics.botApiRateLimited, 1), Effect.sleep(Duration.seconds(retryAfter))),
            request(method, url, init)
          )
        }
        return Effect.succeed(response)
      }
    ).pipe(Effect.orDie)

  const measured = (method: string, call: Effect.Effect<ApiResponse<unknown>>) =>
    Effect.suspend(() => {
      const startedAt = performance.now()
      return Effect.onExit(call, (exit) =>
        Metric.update(
          botApiDurationBy({
            "telegram.method": method,
            outcome: Exit.isFailure(exit) ? "unavailable" : exit.value.ok ? "ok" : exit.value.error_code === 403 ? "blocked" : "rejected"
          }),
          (performance.now() - startedAt) / 1000
        ))
    })

  const fetch = (url: string, init: FetchInit): Promise<Answer> => {
    const method = url.slice(url.lastIndexOf("/") + 1)
    const n = ++calls
    const body = typeof init.body === "string" ? init.body : undefined
    const earlier = past.get(n)
    if (earlier !== undefined) {
      if (earlier.method === method && earlier.digest === digestOf(body)) {
        made.push({ n, method, body, result: earlier.result })
        return runPromise(
          Effect.as(
            Effect.withSpan(Effect.void, `BotApi.${method}`, {
              kind: "client",
              attributes: { "telegram.method": method, "steadfast.recorded": true }
            }),
            answerWith({ ok: true, result: earlier.result })
          )
        )
      }
      // The handler asked something else this time: the call is made, and the record follows it.
      past.delete(n)
      runPromise(Effect.logWarning(`call ${n} of this update was ${earlier.method} before and is ${method} now: made again`))
    }
    if (closed) return Promise.reject(new Error(CALL_AFTER_ATTEMPT))
    if (REFUSED_METHODS.has(method)) {
      return Promise.resolve(answerWith({ ok: false, error_code: 400, description: `${method} is managed by steadfast, not by handlers` }))
    }
    return runPromise(
      request(method, url, init).pipe(
        (call) => measured(method, call),
        Effect.tap((response) =>
          Effect.sync(() => {
            if (response.ok) made.push({ n, method, body, result: response.result })
            else if (response.error_code >= 500 || response.error_code === 429) {
              noteUnreachable(method, `${response.error_code}: ${response.description}`, response.parameters?.retry_after)
            }
          })
        ),
        Effect.tapCause((cause) =>
          Effect.sync(() => {
            const error = Cause.squash(cause)
            noteUnreachable(method, error instanceof Error ? error.message : String(error))
          })
        ),
        Effect.map(answerWith),
        Effect.withSpan(`BotApi.${method}`, { kind: "client", attributes: { "telegram.method": method } })
      )
    )
  }

  const clientOptions: ApiClientOptions = {
    apiRoot: options.endpoint.apiRoot,
    timeoutSeconds: options.endpoint.timeoutSeconds,
    // grammY types `fetch` as node-fetch's; it uses only what botApiFetch implements.
    fetch: fetch as unknown as NonNullable<ApiClientOptions["fetch"]>
  }
  const token = Redacted.value(options.endpoint.token)

  return {
    clientOptions,
    api: () => {
      const api = new Api(token, clientOptions)
      api.config.use(withoutBigInts)
      return api
    },
    close: () => {
      closed = true
    },
    record: () => {
      const known = new Map(past)
      for (const call of made) known.set(call.n, { n: call.n, method: call.method, digest: digestOf(call.body), result: call.result })
      return Array.from(known.values()).sort((a, b) => a.n - b.n)
    },
    unreachable: () => unreachable
  } satisfies AttemptApi
})
