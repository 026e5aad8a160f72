import { Cause, Deferred, Effect, Exit, Queue, type Scope } from "effect"

/**
 * Groups concurrent single-item requests into one database round trip. Callers wait for their
 * own result; `run` gets every request queued since the last batch (up to `max`) and returns one
 * result per item, in order. A failed batch fails each of its callers with the same cause.
 * `writers` batches may be in flight at once, so one slow batch never holds back the next.
 */
export const makeBatcher = <A, B, E>(options: {
  readonly run: (items: ReadonlyArray<A>) => Effect.Effect<ReadonlyArray<B>, E>
  readonly max: number
  readonly writers: number
}): Effect.Effect<(item: A) => Effect.Effect<B, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<{ readonly item: A; readonly done: Deferred.Deferred<B, E> }>()
    const runBatch = Effect.fnUntraced(function*(batch: ReadonlyArray<{ readonly item: A; readonly done: Deferred.Deferred<B, E> }>) {
      const exit = yield* Effect.exit(options.run(batch.map((request) => request.item)))
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
    return (item: A) =>
      Effect.flatMap(Deferred.make<B, E>(), (done) => Effect.andThen(Queue.offer(queue, { item, done }), Deferred.await(done)))
  })
