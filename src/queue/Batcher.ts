import { Cause, Deferred, type Duration, Effect, Exit, Option, Queue, type Scope, type Tracer } from "effect"
import { type Deadline, makeDeadlines } from "./Deadlines.ts"

/**
 * Groups concurrent single-item requests into one database round trip. Callers wait for their
 * own result; `run` gets every request queued since the last batch (up to `max`) and returns one
 * result per item, in order. A failed batch fails each of its callers with the same cause, unless
 * `isItemError` says the failure may come from one item's data: then each item is tried alone,
 * so one bad item never fails its neighbours. `writers` batches may be in flight at once, so one
 * slow batch never holds back the next; at most `capacity` requests wait (beyond it, `full`).
 * A caller that asks for it (`timed`) waits at most `timeout.after`, then fails with
 * `timeout.error`; its item may still be written by the batch it is in.
 */
export const makeBatcher = <A, B, E>(options: {
  readonly run: (items: ReadonlyArray<A>) => Effect.Effect<ReadonlyArray<B>, E>
  readonly max: number
  readonly writers: number
  readonly isItemError?: (error: E) => boolean
  readonly capacity?: number
  readonly full?: E
  readonly timeout?: { readonly after: Duration.Duration; readonly error: E }
}): Effect.Effect<(item: A, timed?: boolean) => Effect.Effect<B, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    type Request = { readonly item: A; readonly done: Deferred.Deferred<B, E>; readonly deadline: Deadline | undefined }
    const queue = yield* Queue.bounded<Request>(options.capacity ?? Number.MAX_SAFE_INTEGER)
    const timeout = options.timeout
    const deadlines = timeout === undefined ? undefined : { start: yield* makeDeadlines(timeout.after), expired: Exit.fail(timeout.error) }
    const isItemError = options.isItemError
    const runBatch = Effect.fnUntraced(function*(batch: ReadonlyArray<Request>): Effect.fn.Return<void> {
      const exit = yield* Effect.exit(options.run(batch.map((request) => request.item)))
      if (
        batch.length > 1 && isItemError !== undefined && Exit.isFailure(exit) &&
        Option.exists(Cause.findErrorOption(exit.cause), isItemError)
      ) {
        return yield* Effect.forEach(batch, (request) => runBatch([request]), { discard: true })
      }
      // Every caller is answered in one step.
      yield* Effect.sync(() => {
        batch.forEach((request, index) => {
          request.deadline?.settle()
          Deferred.doneUnsafe(
            request.done,
            Exit.isFailure(exit)
              ? Exit.failCause(exit.cause)
              : index < exit.value.length
              ? Exit.succeed(exit.value[index] as B)
              : Exit.die(new Error(`batch returned ${exit.value.length} results for ${batch.length} items`))
          )
        })
      })
    })
    yield* Effect.replicateEffect(
      Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.takeBetween(queue, 1, options.max), runBatch)), { startImmediately: true }),
      options.writers
    )
    const full = options.full
    const request = (item: A, done: Deferred.Deferred<B, E>, timed: boolean): Request => ({
      item,
      done,
      deadline: timed ? deadlines?.start(() => Deferred.doneUnsafe(done, deadlines.expired)) : undefined
    })
    return (item: A, timed = false) =>
      Effect.flatMap(Deferred.make<B, E>(), (done) =>
        full === undefined
          ? Effect.andThen(Effect.suspend(() => Queue.offer(queue, request(item, done, timed))), Deferred.await(done))
          : Effect.suspend(() => Queue.offerUnsafe(queue, request(item, done, timed)) ? Deferred.await(done) : Effect.fail(full)))
  })

/** A statement for a batch of requests, traced under the first request's span and linked from the others'. */
export const withBatchSpan = (name: string, batch: ReadonlyArray<{ readonly span: Option.Option<Tracer.AnySpan> }>) =>
<A, E, R>(
  statement: Effect.Effect<A, E, R>
) => {
  const spans = batch.flatMap((item) => Option.toArray(item.span))
  // The curried form: the data-first one captures a stack trace on every call.
  return statement.pipe(Effect.withSpan(name, {
    ...(spans[0] === undefined ? { root: true } : { parent: spans[0] }),
    links: spans.slice(1).map((span) => ({ span, attributes: {} })),
    attributes: { "steadfast.batch_size": batch.length }
  }))
}
