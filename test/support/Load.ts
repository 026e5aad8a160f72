// Load driving for the inbox tests: plans of text updates spread over chats, posting them the
// way Telegram does (a chat's next update only after the previous one was acknowledged,
// redelivering whatever was not answered 200), and reading the replies back per chat.
import { assert } from "@effect/vitest"
import { type Duration, Effect, Schedule } from "effect"
import type { BotApiRecorder, RecordedCall } from "./BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { postUpdate, RequestFailed } from "./TestHttp.ts"
import { type PgProbe } from "./TestDatabase.ts"
import { eventually } from "./Eventually.ts"

export interface Planned {
  readonly updateId: number
  readonly chatId: number
  readonly text: string
}

/** Per chat, its updates in update_id order. */
export type Plan = ReadonlyArray<ReadonlyArray<Planned>>

/** A small deterministic PRNG (mulberry32), so a failing interleaving can be replayed. */
export const prng = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * `chats` × `perChat` text updates. update_ids are handed out in a shuffled order across chats,
 * so every chat's ids increase but interleave with the other chats' ids. The text carries the id
 * (`u<update_id>`), which the fallback handler quotes back.
 */
export const interleavedPlan = (options: {
  readonly chats: number
  readonly perChat: number
  readonly firstUpdateId: number
  readonly firstChatId: number
  readonly seed: number
  readonly text?: (updateId: number, chatIndex: number, indexInChat: number) => string
}): Plan => {
  const random = prng(options.seed)
  const slots = Array.from({ length: options.chats * options.perChat }, (_, i) => i % options.chats)
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[slots[i], slots[j]] = [slots[j]!, slots[i]!]
  }
  const plan: Array<Array<Planned>> = Array.from({ length: options.chats }, () => [])
  slots.forEach((chatIndex, i) => {
    const updateId = options.firstUpdateId + i
    const chat = plan[chatIndex]!
    chat.push({
      updateId,
      chatId: options.firstChatId + chatIndex,
      text: options.text?.(updateId, chatIndex, chat.length) ?? `u${updateId}`
    })
  })
  return plan
}

export const toUpdate = (planned: Planned) => sampleUpdate({ updateId: planned.updateId, chatId: planned.chatId, text: planned.text })

/** What the poster saw: HTTP statuses by code and failed connections. */
export interface PostStats {
  readonly statuses: Map<number, number>
  failures: number
}

export const makePostStats = (): PostStats => ({ statuses: new Map(), failures: 0 })

/**
 * Posts until the service answers 200, like Telegram redelivering after a non-2xx answer or a
 * lost connection. `base` is read on every attempt, so a test can point it at a new process.
 */
export const postUntilStored = (base: Effect.Effect<string>, update: unknown, stats: PostStats) =>
  Effect.gen(function*() {
    const { status } = yield* Effect.flatMap(base, (url) => postUpdate(url, update)).pipe(
      Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.fail(new RequestFailed({ reason: "no answer within 10 s" })) }),
      Effect.tapError(() => Effect.sync(() => void stats.failures++))
    )
    stats.statuses.set(status, (stats.statuses.get(status) ?? 0) + 1)
    if (status !== 200) return yield* new RequestFailed({ reason: `answered ${status}` })
  }).pipe(Effect.retry(Schedule.spaced("100 millis")))

/**
 * Posts a plan: chats concurrently, each chat's updates one after another. Every
 * `redeliverEvery`-th update is also posted a second time at once, as Telegram does when an
 * acknowledgement is lost: the service must answer both 200 and handle the update once.
 */
export const postPlan = (
  base: Effect.Effect<string>,
  plan: Plan,
  stats: PostStats,
  options: { readonly redeliverEvery?: number } = {}
) =>
  Effect.forEach(plan, (chat) =>
    Effect.forEach(chat, (planned) => {
      const update = toUpdate(planned)
      const redeliver = options.redeliverEvery !== undefined && planned.updateId % options.redeliverEvery === 0
      return redeliver
        ? Effect.all([postUntilStored(base, update, stats), postUntilStored(base, update, stats)], { concurrency: 2, discard: true })
        : postUntilStored(base, update, stats)
    }, { discard: true }), { concurrency: "unbounded", discard: true })

const QUOTED = /“([^”]*)”/

/** What a reply answers: the text the fallback quotes, or `/start` for the greeting. */
export const replyToken = (text: string): string => QUOTED.exec(text)?.[1] ?? (text.startsWith("Hello") ? "/start" : text)

// awaitCalls re-checks its predicate on every call: parse each recorded call once.
const parsed = new WeakMap<RecordedCall, { readonly chatId: number; readonly token: string }>()
const parse = (call: RecordedCall) => {
  let result = parsed.get(call)
  if (result === undefined) {
    result = { chatId: Number(call.params["chat_id"]), token: replyToken(String(call.params["text"] ?? "")) }
    parsed.set(call, result)
  }
  return result
}

/** The reply tokens per chat, in the order the Bot API received them. */
export const repliesByChat = (calls: ReadonlyArray<RecordedCall>): Map<number, Array<string>> => {
  const byChat = new Map<number, Array<string>>()
  for (const call of calls) {
    if (call.method !== "sendMessage") continue
    const { chatId, token } = parse(call)
    const list = byChat.get(chatId) ?? []
    list.push(token)
    byChat.set(chatId, list)
  }
  return byChat
}

/** How many planned updates have at least one reply. */
export const answeredCount = (plan: Plan, calls: ReadonlyArray<RecordedCall>): number => {
  const replies = repliesByChat(calls)
  let answered = 0
  for (const chat of plan) {
    const got = new Set(replies.get(chat[0]?.chatId ?? -1) ?? [])
    for (const planned of chat) if (got.has(planned.text)) answered++
  }
  return answered
}

/** Drops immediate repeats: a reply delivered again after a crash lands right after itself. */
export const withoutImmediateRepeats = <A>(items: ReadonlyArray<A>): Array<A> => items.filter((item, i) => i === 0 || items[i - 1] !== item)

/** Each chat's updates `from` (inclusive) to `to` (exclusive). */
export const slicePlan = (plan: Plan, from: number, to: number): Plan => plan.map((chat) => chat.slice(from, to))

/** Posts the plan: chats concurrently, within a chat one update after another, alternating between `bases`. */
export const postAlternating = (plan: Plan, bases: ReadonlyArray<string>, stats: PostStats) =>
  Effect.forEach(
    plan,
    // Chats start on different instances: a chat's first update goes to base (chat index) mod n.
    (chat, c) =>
      Effect.forEach(chat, (planned, i) => postUntilStored(Effect.succeed(bases[(c + i) % bases.length]!), toUpdate(planned), stats), {
        discard: true
      }),
    {
      concurrency: "unbounded",
      discard: true
    }
  )

/**
 * The check that a plan was answered in order: waits until every planned update has a reply
 * (within `timeout`, 60 s by default), every update is done and the outbox is drained, so no
 * late duplicate can still arrive; then each chat's replies must be its updates in update_id
 * order. With `repeats: "immediate"` a reply may come again right after itself (a call cut off
 * by a crash or shutdown, made again by its update's re-run). Returns how many replies repeated.
 */
export const assertAnsweredInOrder = (
  plan: Plan,
  recorder: BotApiRecorder["Service"],
  pg: PgProbe,
  options: { readonly timeout?: Duration.Input; readonly repeats?: "none" | "immediate" } = {}
) =>
  Effect.gen(function*() {
    const total = plan.reduce((sum, chat) => sum + chat.length, 0)
    yield* recorder.awaitCalls((calls) => answeredCount(plan, calls) === total, options.timeout ?? "60 seconds")
    // A reply is made while its update runs: the update's done mark follows it.
    yield* eventually("every update done", pg.inboxStatuses, (statuses) => statuses["done"] === total, { timeout: "30 seconds" })
    yield* eventually(
      "an empty outbox queue",
      pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE status IN ('pending', 'sending')`),
      (rows) => rows[0]?.n === 0,
      { timeout: "30 seconds" }
    )
    const replies = repliesByChat(yield* recorder.calls)
    let repeats = 0
    for (const chat of plan) {
      const got = replies.get(chat[0]!.chatId) ?? []
      const distinct = options.repeats === "immediate" ? withoutImmediateRepeats(got) : got
      repeats += got.length - distinct.length
      assert.deepStrictEqual(distinct, chat.map((planned) => planned.text), `replies to chat ${chat[0]!.chatId}`)
    }
    assert.deepStrictEqual(yield* pg.inboxStatuses, { done: total })
    return repeats
  })
