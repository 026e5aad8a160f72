import { Cause, Deferred, Effect, Exit, Option, Queue, type Scope } from "effect"

/**
 * Groups concurrent single-item requests into one database round trip. Callers wait for their
 * own result; `run` gets every request queued since the last batch (up to `max`) and returns one
 * result per item, in order. A failed batch fails each of its callers with the same cause, unless
 * `isItemError` says the failure may come from one item's data: then each item is tried alone,
 * so one bad item never fails its neighbours. `writers` batches may be in flight at once, so one
 * slow batch never holds back the next; at most `capacity` requests wait (beyond it, `full`).
 */
export const makeBatcher = <A, B, E>(options: {
  readonly run: (items: ReadonlyArray<A>) => Effect.Effect<ReadonlyArray<B>, E>
  readonly max: number
  readonly writers: number
  readonly isItemError?: (error: E) => boolean
  readonly capacity?: number
  readonly full?: E
}): Effect.Effect<(item: A) => Effect.Effect<B, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    type Request = { readonly item: A; readonly done: Deferred.Deferred<B, E> }
    const queue = yield* Queue.bounded<Request>(options.capacity ?? Number.MAX_SAFE_INTEGER)
    const isItemError = options.isItemError
    const runBatch = Effect.fnUntraced(function*(batch: ReadonlyArray<Request>): Effect.fn.Return<void> {
      const exit = yield* Effect.exit(options.run(batch.map((request) => request.item)))
      if (
        batch.length > 1 && isItemError !== undefined && Exit.isFailure(exit) &&
        Option.exists(Cause.findErrorOption(exit.cause), isItemError)
      ) {
        return yield* Effect.forEach(batch, (request) => runBatch([request]), { discard: true })
      }
      yield* Effect.forEach(batch, (request, index) => {
        if (Exit.isFailure(exit)) return Deferred.failCause(request.done, exit.cause)
        return index < exit.value.length
          ? Deferred.succeed(request.done, exit.value[index] as B)
          : Deferred.failCause(request.done, Cause.die(new Error(`batch returned ${exit.value.length} results for ${batch.length} items`)))
      }, { discard: true })
    })
    yield* Effect.replicateEffect(
      Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.takeBetween(queue, 1, options.max), runBatch)), { startImmediately: true }),
      options.writers
    )
    const full = options.full
    return (item: A) =>
      Effect.flatMap(Deferred.make<B, E>(), (done) =>
        full === undefined
          ? Effect.andThen(Queue.offer(queue, { item, done }), Deferred.await(done))
          : Effect.suspend(() => Queue.offerUnsafe(queue, { item, done }) ? Deferred.await(done) : Effect.fail(full)))
  })
