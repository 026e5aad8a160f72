// grammY inside the pipeline. Each update gets a grammY `Context` whose `Api` never talks to
// Telegram itself: an API transformer routes every call either to the update's outbox buffer
// (sent once the update's transaction commits, in order per chat) or straight to the BotApi
// service (reads and calls that must happen now), and the context carries the transaction's SQL.
import { Api, Context, GrammyError, InputFile, type MiddlewareFn, type Transformer } from "grammy"
import type { ApiResponse, Update, UserFromGetMe } from "grammy/types"
import { AsyncLocalStorage } from "node:async_hooks"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import { isInfrastructureError } from "../db/Faults.ts"
import { BotApi, type BotApiUnavailable } from "../telegram/BotApi.ts"
import { HandlerFailure } from "./Handler.ts"

/** Promise-style SQL in the update's transaction: ``await ctx.sql`SELECT …` `` gives the rows. */
export type SqlTag = <Row extends object = Record<string, unknown>>(
  strings: TemplateStringsArray,
  ...values: ReadonlyArray<unknown>
) => Promise<ReadonlyArray<Row>>

/** The context grammY middleware gets here: grammY's own, plus `sql` in the update's transaction. */
export class SteadfastContext extends Context {
  readonly sql: SqlTag
  constructor(update: Update, api: Api, me: UserFromGetMe, sql: SqlTag) {
    super(update, api, me)
    this.sql = sql
  }
}

/**
 * Calls made at once, not queued. Reads (`get*`) so the handler gets real data; answers Telegram
 * waits for with a deadline (pre-checkout 10 s, shipping, inline and Web App queries), which must
 * not wait behind the chat's queued messages; a refund, whose outcome the handler needs before it
 * records anything; and links/prepared messages whose result the handler sends on.
 */
export const DIRECT_METHODS: ReadonlySet<string> = new Set([
  "answerPreCheckoutQuery",
  "answerShippingQuery",
  "answerInlineQuery",
  "answerWebAppQuery",
  "refundStarPayment",
  "createInvoiceLink",
  "savePreparedInlineMessage"
])

/** Methods that would change how updates reach this service; a handler must not call them. */
const REFUSED_METHODS: ReadonlySet<string> = new Set(["getUpdates", "setWebhook", "deleteWebhook", "logOut", "close"])

export type CallRoute = "queue" | "direct" | "refused"

export const routeOf = (method: string): CallRoute =>
  REFUSED_METHODS.has(method) ? "refused" : method.startsWith("get") || DIRECT_METHODS.has(method) ? "direct" : "queue"

const hasInputFile = (value: unknown): boolean =>
  value instanceof InputFile ||
  (typeof value === "object" && value !== null && Object.values(value).some(hasInputFile))

const refusal = (description: string): ApiResponse<never> => ({ ok: false, error_code: 400, description })

/** What a queued call resolves to: the `{ ok: true, result: true }` grammY's webhook reply resolves to. */
const QUEUED: ApiResponse<true> = { ok: true, result: true }

/** The update's transaction, for code that only has a key (grammY's session storage). */
export interface UpdateScope {
  readonly run: <A, E>(effect: Effect.Effect<A, E, SqlClient>) => Promise<A>
}

export const updateScope = new AsyncLocalStorage<UpdateScope>()

export interface GrammyRun {
  readonly update: Update
  readonly me: UserFromGetMe
  /** Buffers a call for the outbox. */
  readonly queue: (method: string, payload: object) => Effect.Effect<void>
}

/**
 * Runs grammY middleware on one update, inside the caller's transaction. Succeeds with whether
 * the middleware handled the update (false when it fell through to the end without taking it);
 * a thrown error or rejected promise becomes a HandlerFailure, which rolls the transaction back.
 */
export const runGrammy = Effect.fnUntraced(function*(middleware: MiddlewareFn<SteadfastContext>, run: GrammyRun) {
  const services = yield* Effect.context<SqlClient | BotApi>()
  const runPromise = Effect.runPromiseWith(services)
  const sql = yield* SqlClient
  const botApi = yield* BotApi

  // Kept so that a handler failing because Telegram was unreachable fails with that, not with its
  // own error: the update is then retried without counting toward MAX_ATTEMPTS.
  let unreachable: BotApiUnavailable | undefined
  const direct = (method: string, payload: object) =>
    botApi.callRaw(method, { ...payload }).pipe(
      Effect.map((result): ApiResponse<unknown> => ({ ok: true, result })),
      Effect.catchTags({
        BotApiRejected: (error) => Effect.succeed({ ok: false, error_code: error.errorCode, description: error.description } as const),
        ChatBlocked: (error) => Effect.succeed({ ok: false, error_code: 403, description: error.description } as const),
        // grammY code sees an HTTP-like failure; left uncaught it fails the handler, and the update is retried.
        BotApiUnavailable: (error) =>
          Effect.sync(() => {
            unreachable = error
            return { ok: false, error_code: 503, description: error.message } as const
          })
      })
    )

  const answer = (method: string, body: object): Promise<ApiResponse<unknown>> => {
    switch (routeOf(method)) {
      case "refused":
        return Promise.resolve(refusal(`${method} is managed by steadfast, not by handlers`))
      case "direct":
        return runPromise(direct(method, body))
      case "queue":
        // Uploads cannot wait in a JSON outbox row; send files by file_id or URL.
        return hasInputFile(body)
          ? Promise.resolve(refusal(`${method} with an InputFile upload cannot be queued; send the file by file_id or URL`))
          : runPromise(Effect.as(run.queue(method, body), QUEUED))
    }
  }
  // The answer is Telegram's result for `method` (or the queued marker), as grammY's client would return it.
  const transformer = ((_prev, method, payload) => answer(method, payload ?? {})) as Transformer
  // The token is never used: the transformer answers every call without calling `prev`.
  const api = new Api("steadfast")
  api.config.use(transformer)

  const scope: UpdateScope = { run: (effect) => runPromise(effect.pipe(Effect.provideService(SqlClient, sql))) }
  const sqlTag: SqlTag = <Row extends object>(strings: TemplateStringsArray, ...values: ReadonlyArray<unknown>) =>
    scope.run(sql<Row>(strings, ...values))
  const ctx = new SteadfastContext(run.update, api, run.me, sqlTag)

  let fellThrough = false
  yield* Effect.tryPromise({
    try: () =>
      updateScope.run(scope, () =>
        Promise.resolve(middleware(ctx, () => {
          fellThrough = true
          return Promise.resolve()
        }))),
    catch: (error) =>
      error instanceof SqlError && isInfrastructureError(error) ?
        error
        : error instanceof GrammyError && error.error_code === 503 && unreachable !== undefined ?
        unreachable
        : new HandlerFailure({ reason: error instanceof Error ? `${error.name}: ${error.message}` : String(error) })
  })
  return !fellThrough
})
