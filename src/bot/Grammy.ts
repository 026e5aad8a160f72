// grammY inside the pipeline. Each attempt of an update gets a grammY `Context` whose `Api` calls
// Telegram at once through the attempt's recorded client (AttemptApi), with the developer's own
// transformers on top, exactly as `Bot.handleUpdate` builds one; `ctx.afterCommit` queues calls
// that must wait for the update's transaction, and `ctx.sql` runs in that transaction.
import { Api, Context, GrammyError, type MiddlewareFn, type Transformer } from "grammy"
import type { ApiResponse, Update, UserFromGetMe } from "grammy/types"
import { AsyncLocalStorage } from "node:async_hooks"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import { isInfrastructureError } from "../db/Faults.ts"
import { type BotApiUnavailable, ChatBlocked } from "../telegram/BotApi.ts"
import type { AttemptApi } from "./AttemptApi.ts"
import { HandlerFailure } from "./Handler.ts"

/** Promise-style SQL in the update's transaction: ``await ctx.sql`SELECT …` `` gives the rows. */
export type SqlTag = <Row extends object = Record<string, unknown>>(
  strings: TemplateStringsArray,
  ...values: ReadonlyArray<unknown>
) => Promise<ReadonlyArray<Row>>

/**
 * The context grammY middleware gets here: grammY's own, plus `sql` in the update's transaction and
 * `afterCommit`, an `Api` whose calls are sent only once that transaction commits (in order per
 * chat; each resolves to `true` at once, since nothing has been sent yet).
 */
export class SteadfastContext extends Context {
  readonly sql: SqlTag
  readonly afterCommit: Api
  constructor(update: Update, api: Api, me: UserFromGetMe, sql: SqlTag, afterCommit: Api) {
    super(update, api, me)
    this.sql = sql
    this.afterCommit = afterCommit
  }
}

/** The update's attempt, for code that only has a key or a bot (session storage, `bot.api`). */
export interface UpdateScope {
  readonly run: <A, E>(effect: Effect.Effect<A, E, SqlClient>) => Promise<A>
  readonly api: Api
}

export const updateScope = new AsyncLocalStorage<UpdateScope>()

/** What grammY gets of a developer's `Bot`: its middleware, error handler, transformers and context class. */
export interface GrammyEntry {
  readonly middleware: MiddlewareFn<SteadfastContext>
  /** `bot.catch`: an error it handles (resolves) counts as handled, as in grammY. */
  readonly errorHandler?: (error: unknown, ctx: Context) => Promise<unknown>
  readonly transformers: () => ReadonlyArray<Transformer>
}

export interface GrammyRun {
  readonly update: Update
  readonly me: UserFromGetMe
  readonly attempt: AttemptApi
  /** Buffers a call for the outbox, sent after commit. */
  readonly queue: (method: string, payload: object) => Effect.Effect<void>
}

const QUEUED: ApiResponse<true> = { ok: true, result: true }

/**
 * Runs grammY middleware on one update, inside the caller's transaction. Succeeds with whether
 * the middleware handled the update (false when it fell through to the end without taking it);
 * a thrown error or rejected promise becomes a HandlerFailure, which rolls the transaction back,
 * unless the bot's error handler takes it.
 */
export const runGrammy = Effect.fnUntraced(function*(entry: GrammyEntry, run: GrammyRun) {
  const services = yield* Effect.context<SqlClient>()
  const runPromise = Effect.runPromiseWith(services)
  const sql = yield* SqlClient

  const api = run.attempt.api()
  const own = entry.transformers()
  if (own.length > 0) api.config.use(...own)
  // Nothing of this client reaches Telegram: every call is queued for after the commit.
  const afterCommit = new Api("steadfast")
  afterCommit.config.use(((_prev, method, payload) => runPromise(Effect.as(run.queue(method, payload ?? {}), QUEUED))) as Transformer)

  const scope: UpdateScope = { run: (effect) => runPromise(effect.pipe(Effect.provideService(SqlClient, sql))), api }
  const sqlTag: SqlTag = <Row extends object>(strings: TemplateStringsArray, ...values: ReadonlyArray<unknown>) =>
    scope.run(sql<Row>(strings, ...values))
  const ctx = new SteadfastContext(run.update, api, run.me, sqlTag, afterCommit)

  let fellThrough = false
  const handle = () =>
    Promise.resolve(entry.middleware(ctx, () => {
      fellThrough = true
      return Promise.resolve()
    }))
  const caught = entry.errorHandler
  yield* Effect.tryPromise({
    try: () => updateScope.run(scope, () => caught === undefined ? handle() : handle().catch((error: unknown) => caught(error, ctx))),
    catch: (error): HandlerFailure | SqlError | BotApiUnavailable | ChatBlocked => {
      const unreachable = run.attempt.unreachable()
      return error instanceof SqlError && isInfrastructureError(error) ?
        error
        : error instanceof GrammyError && error.error_code === 403 ?
        new ChatBlocked({ method: error.method, description: error.description })
        // A handler that failed while Telegram could not be reached is retried without counting.
        : unreachable !== undefined && !(error instanceof GrammyError && error.error_code < 500 && error.error_code !== 429) ?
        unreachable
        : new HandlerFailure({ reason: error instanceof Error ? `${error.name}: ${error.message}` : String(error) })
    }
  })
  return !fellThrough
})
