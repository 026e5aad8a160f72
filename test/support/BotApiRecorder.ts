// The tests' Bot API: the sandbox's stand-in server (src/sandbox/BotApiRecorder.ts) with a
// recorder around its answers: every call kept, answers scripted or delayed, waits on calls.
import type { WebhookInfo } from "grammy/types"
import { Context, Duration, Effect, Layer, Option, Ref, Schema, Stream, SubscriptionRef } from "effect"
import { type Answer, BotApiStandIn, type IncomingCall, type StandInOptions, telegramError } from "../../src/sandbox/BotApiStandIn.ts"

/** One Bot API request as the stand-in saw it: the token is never part of it. */
export interface RecordedCall {
  readonly method: string
  readonly params: Record<string, unknown>
  readonly at: number
  /** What the stand-in answered with, when the call succeeded (a sent Message, `true`, …). */
  readonly result?: unknown
}

/**
 * A canned answer. `body` defaults to a Telegram error object for `status`; a string body is sent
 * as-is (a proxy's HTML error page). `delayMs` replaces the `setDelay` wait for this call.
 */
export interface ScriptedResponse {
  readonly status: number
  readonly body?: unknown
  readonly delayMs?: number
}

export class StandInTimeout extends Schema.TaggedError<StandInTimeout>()("StandInTimeout", {
  timeout: Schema.String,
  seen: Schema.String
}) {
  override get message(): string {
    return `condition not met within ${this.timeout}; seen ${this.seen}`
  }
}

export interface RecorderOptions extends StandInOptions {
  /** How many of the latest calls (and aborted calls) are kept for `calls`; 10 000 by default. */
  readonly maxCalls?: number
}

interface Recorded {
  readonly calls: ReadonlyArray<RecordedCall>
  readonly aborted: ReadonlyArray<RecordedCall>
}

const summarize = (calls: ReadonlyArray<RecordedCall>): string => {
  if (calls.length === 0) return "no calls"
  const counts = new Map<string, number>()
  for (const call of calls) counts.set(call.method, (counts.get(call.method) ?? 0) + 1)
  const parts = Array.from(counts, ([method, n]) => `${method} x${n}`)
  return `${calls.length} call${calls.length === 1 ? "" : "s"} (${parts.join(", ")})`
}

export class BotApiRecorder extends Context.Service<BotApiRecorder, {
  /** The apiRoot to hand to grammY, e.g. `http://127.0.0.1:41234`. */
  readonly url: string
  /** The last `maxCalls` calls received (10 000 by default), oldest first. */
  readonly calls: Effect.Effect<ReadonlyArray<RecordedCall>>
  /** Calls whose client hung up before the stand-in answered (timeouts, interruptions). */
  readonly aborted: Effect.Effect<ReadonlyArray<RecordedCall>>
  /** Forgets the recorded and aborted calls. */
  readonly clear: Effect.Effect<void>
  /** Waits until `predicate` holds for the recorded calls, re-checking on every new call. */
  readonly awaitCalls: (
    predicate: (calls: ReadonlyArray<RecordedCall>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<RecordedCall>, StandInTimeout>
  /** Waits until `predicate` holds for the aborted calls. */
  readonly awaitAborted: (
    predicate: (aborted: ReadonlyArray<RecordedCall>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<RecordedCall>, StandInTimeout>
  /** The next `responses.length` calls of `method` get these answers, in order. */
  readonly script: (method: string, responses: ReadonlyArray<ScriptedResponse>) => Effect.Effect<void>
  /** Every call but getMe waits this long before it is answered. */
  readonly setDelay: (ms: number) => Effect.Effect<void>
  /** Overrides fields of what getWebhookInfo returns. */
  readonly setWebhookInfo: (patch: Partial<WebhookInfo>) => Effect.Effect<void>
}>()("test/support/BotApiRecorder") {
  static layer(options?: RecorderOptions) {
    return Layer.effect(BotApiRecorder, BotApiRecorder.make(options ?? {}))
  }

  static make = Effect.fnUntraced(function*(options: RecorderOptions) {
    const maxCalls = Math.max(1, options.maxCalls ?? 10_000)
    // A ring of the last calls: a long test must not keep every call it caused.
    const keepLast = (calls: ReadonlyArray<RecordedCall>, call: RecordedCall): ReadonlyArray<RecordedCall> =>
      calls.length < maxCalls ? [...calls, call] : [...calls.slice(calls.length - maxCalls + 1), call]
    const recorded = yield* SubscriptionRef.make<Recorded>({ calls: [], aborted: [] })
    const scripts = yield* Ref.make<ReadonlyMap<string, ReadonlyArray<ScriptedResponse>>>(new Map())
    const delayMs = yield* Ref.make(0)
    const webhookOverrides = yield* Ref.make<Partial<WebhookInfo>>({})
    // The stand-in hands the same IncomingCall to respond and hungUp: it keys the recorded call.
    const recordedOf = new WeakMap<IncomingCall, RecordedCall>()
    const recordOf = (call: IncomingCall) => {
      let known = recordedOf.get(call)
      if (known === undefined) recordedOf.set(call, known = { method: call.method, params: call.params ?? {}, at: call.at })
      return known
    }

    const takeScript = (method: string) =>
      Ref.modify(scripts, (map): [ScriptedResponse | undefined, ReadonlyMap<string, ReadonlyArray<ScriptedResponse>>] => {
        const queue = map.get(method)
        if (queue === undefined || queue.length === 0) return [undefined, map]
        const next = new Map(map)
        if (queue.length === 1) next.delete(method)
        else next.set(method, queue.slice(1))
        return [queue[0], next]
      })

    const withWebhookOverrides = (answer: Answer) =>
      Effect.map(Ref.get(webhookOverrides), (overrides): Answer => {
        const body = answer.body
        if (answer.status !== 200 || typeof body !== "object" || body === null || !("result" in body)) return answer
        return { ...answer, body: { ...body, result: { ...(body.result as object), ...overrides } } }
      })

    const respond = Effect.fnUntraced(function*(incoming: IncomingCall, model: Effect.Effect<Answer>) {
      const call = recordOf(incoming)
      yield* SubscriptionRef.update(recorded, (r) => ({ ...r, calls: keepLast(r.calls, call) }))
      const scripted = yield* takeScript(call.method)
      // The service asks getMe once, at start: a delay models slow deliveries, not a slow start.
      const delay = scripted?.delayMs ?? (call.method === "getMe" ? 0 : yield* Ref.get(delayMs))
      if (delay > 0) yield* Effect.sleep(Duration.millis(delay))
      const result: Answer = scripted !== undefined
        ? (scripted.body === undefined ? telegramError(scripted.status) : { status: scripted.status, body: scripted.body })
        : call.method === "getWebhookInfo"
        ? yield* Effect.flatMap(model, withWebhookOverrides)
        : yield* model
      if (result.status === 200 && typeof result.body === "object" && result.body !== null && "result" in result.body) {
        const answered = { ...call, result: result.body.result }
        yield* SubscriptionRef.update(recorded, (r) => ({ ...r, calls: r.calls.map((known) => known === call ? answered : known) }))
      }
      return result
    })

    const standIn = yield* BotApiStandIn.make(options, {
      respond,
      hungUp: (incoming) => SubscriptionRef.update(recorded, (r) => ({ ...r, aborted: keepLast(r.aborted, recordOf(incoming)) }))
    })

    const awaitState = (
      select: (r: Recorded) => ReadonlyArray<RecordedCall>,
      predicate: (calls: ReadonlyArray<RecordedCall>) => boolean,
      timeout: Duration.Input
    ) =>
      SubscriptionRef.changes(recorded).pipe(
        Stream.map(select),
        Stream.filter(predicate),
        Stream.runHead,
        // changes() never ends, so runHead only returns once a matching state was published.
        Effect.map(Option.getOrElse((): ReadonlyArray<RecordedCall> => [])),
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () =>
            Effect.flatMap(SubscriptionRef.get(recorded), (r) =>
              Effect.fail(
                new StandInTimeout({
                  timeout: Duration.format(Duration.fromInputUnsafe(timeout)),
                  seen: `${summarize(r.calls)}, ${r.aborted.length} aborted`
                })
              ))
        })
      )

    return BotApiRecorder.of({
      url: standIn.url,
      calls: Effect.map(SubscriptionRef.get(recorded), (r) => r.calls),
      aborted: Effect.map(SubscriptionRef.get(recorded), (r) => r.aborted),
      clear: SubscriptionRef.set(recorded, { calls: [], aborted: [] }),
      awaitCalls: (predicate, timeout = "5 seconds") => awaitState((r) => r.calls, predicate, timeout),
      awaitAborted: (predicate, timeout = "5 seconds") => awaitState((r) => r.aborted, predicate, timeout),
      script: (method, responses) => Ref.update(scripts, (map) => new Map(map).set(method, [...(map.get(method) ?? []), ...responses])),
      setDelay: (ms) => Ref.set(delayMs, ms),
      setWebhookInfo: (patch) => Ref.update(webhookOverrides, (current) => ({ ...current, ...patch }))
    })
  })
}
