// The load driver: posts updates to a webhook the way Telegram does and watches the Bot API
// stand-in until every update has been answered.
//
// Telegram semantics kept here: at most `concurrency` connections at once (Telegram's
// max_connections, 40 by default); a chat's next update is sent only after the previous one
// was acknowledged with a 2xx; a non-2xx answer (or a broken connection) is retried after
// Retry-After seconds, or 1 s without one.
import { Agent, request } from "node:http"
import { performance } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import { sampleUpdate } from "../src/sandbox/sampleUpdate.ts"
import { isRepliesSnapshot, isStatsSnapshot, taggedText, type RepliesSnapshot, type StatsSnapshot } from "./protocol.ts"
import { percentile } from "./stats.ts"

export interface DriverOptions {
  /** The contender's instances, e.g. http://127.0.0.1:8080 (POST /webhook): requests go round robin. */
  readonly baseUrls: ReadonlyArray<string>
  readonly secret: string
  /** The bench stand-in, for GET /__stats and /__replies. */
  readonly standInUrl: string
  readonly updates: number
  readonly chats: number
  readonly firstUpdateId: number
  readonly firstChatId: number
  readonly concurrency: number
  /** Share of updates that are `/start` (the rest are plain text quoting their update id). */
  readonly startShare: number
  readonly seed: number
  /** Give up when neither an ack nor a reply arrived for this long. */
  readonly stallTimeoutMs: number
  /** After the last expected reply, keep listening this long for late duplicates. */
  readonly settleMs: number
  readonly log?: (line: string) => void
  /** True once the contender is gone: the driver stops instead of retrying forever. */
  readonly aborted?: () => boolean
  /**
   * Paced load: first attempts leave at this many updates per second overall (retries are not
   * paced). Unset: as fast as the connections and chats allow.
   */
  readonly ratePerSecond?: number
}

export interface LatencySummary {
  readonly count: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

export interface DriverResult {
  readonly updates: number
  readonly starts: number
  /** Requests answered 2xx, one per update. */
  readonly acked: number
  /** Non-2xx answers by status ("network" for a broken connection, "timeout"); each one was retried. */
  readonly rejected: Readonly<Record<string, number>>
  /** Latency of every 2xx answer (ms). */
  readonly ack: LatencySummary
  /** From the first request to the last 2xx answer. */
  readonly ackSeconds: number
  readonly ackPerSecond: number
  /** From the first request until the last expected reply reached the stand-in. */
  readonly e2eSeconds: number
  readonly e2ePerSecond: number
  /** Per quoted update: first request sent → its reply reached the stand-in (ms). */
  readonly reply: LatencySummary
  readonly complete: boolean
  /** Updates (or /start greetings) that never got a reply. */
  readonly lost: number
  /** Replies beyond the first for one update (or beyond the expected /start count of a chat). */
  readonly duplicated: number
}

/** Deterministic pseudo-random numbers (mulberry32), so every contender gets the same updates. */
const random = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface PlannedUpdate {
  readonly updateId: number
  readonly chatId: number
  readonly start: boolean
  readonly body: string
}

const plan = (options: DriverOptions): ReadonlyArray<PlannedUpdate> => {
  const next = random(options.seed)
  return Array.from({ length: options.updates }, (_, i) => {
    const updateId = options.firstUpdateId + i
    const chatId = options.firstChatId + (i % options.chats)
    const start = next() < options.startShare
    const update = sampleUpdate({
      updateId,
      chatId,
      messageId: Math.floor(i / options.chats) + 1,
      date: 1767225600 + i,
      firstName: `User${chatId}`,
      username: `user_${chatId}`,
      text: start ? "/start" : taggedText(updateId, chatId)
    })
    return { updateId, chatId, start, body: JSON.stringify(update) }
  })
}

/** Chats whose next update may be sent now, oldest first; workers wait here for work. */
class ReadyChats {
  private readonly items: Array<number> = []
  private readonly waiters: Array<(chat: number | undefined) => void> = []
  private closed = false

  push(chat: number) {
    if (this.closed) return
    const waiter = this.waiters.shift()
    if (waiter !== undefined) waiter(chat)
    else this.items.push(chat)
  }

  take(): Promise<number | undefined> {
    const chat = this.items.shift()
    if (chat !== undefined) return Promise.resolve(chat)
    if (this.closed) return Promise.resolve(undefined)
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  close() {
    this.closed = true
    for (const waiter of this.waiters.splice(0)) waiter(undefined)
  }
}

export interface Answer {
  readonly status: number | "network" | "timeout"
  readonly retryAfterSeconds: number | undefined
}

/** Telegram gives up on a webhook request after about a minute and redelivers later. */
const REQUEST_TIMEOUT_MS = 60_000

export const post = (agent: Agent, url: URL, secret: string, body: string): Promise<Answer> =>
  new Promise((resolve) => {
    const req = request({
      agent,
      host: url.hostname,
      port: url.port,
      path: "/webhook",
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "x-telegram-bot-api-secret-token": secret
      }
    }, (res) => {
      res.resume()
      res.once("end", () => {
        const header = res.headers["retry-after"]
        const retryAfter = header === undefined ? undefined : Number(header)
        resolve({
          status: res.statusCode ?? 0,
          retryAfterSeconds: retryAfter !== undefined && Number.isFinite(retryAfter) ? retryAfter : undefined
        })
      })
      res.once("error", () => resolve({ status: "network", retryAfterSeconds: undefined }))
    })
    let timedOut = false
    req.setTimeout(REQUEST_TIMEOUT_MS, () => {
      timedOut = true
      req.destroy()
    })
    req.once("error", () => resolve({ status: timedOut ? "timeout" : "network", retryAfterSeconds: undefined }))
    req.end(body)
  })

const getJson = async (url: string): Promise<unknown> => {
  const response = await fetch(url)
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`)
  return response.json()
}

export const standInStats = async (standInUrl: string): Promise<StatsSnapshot> => {
  const body = await getJson(`${standInUrl}/__stats`)
  if (!isStatsSnapshot(body)) throw new Error("stand-in /__stats: unexpected answer")
  return body
}

const standInReplies = async (standInUrl: string): Promise<RepliesSnapshot> => {
  const body = await getJson(`${standInUrl}/__replies`)
  if (!isRepliesSnapshot(body)) throw new Error("stand-in /__replies: unexpected answer")
  return body
}

export const summarize = (values: ReadonlyArray<number>): LatencySummary => {
  const sorted = [...values].sort((a, b) => a - b)
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length === 0 ? 0 : sorted[sorted.length - 1]!,
    mean: sorted.length === 0 ? 0 : sorted.reduce((sum, v) => sum + v, 0) / sorted.length
  }
}

export const drive = async (options: DriverOptions): Promise<DriverResult> => {
  const log = options.log ?? (() => {})
  const aborted = options.aborted ?? (() => false)
  const updates = plan(options)
  const expectedTagged = updates.filter((u) => !u.start).length
  const expectedStarts = updates.length - expectedTagged
  const baseline = await standInStats(options.standInUrl)

  // Per chat, its updates in update_id order; chats become ready in order of their first update.
  const byChat = new Map<number, Array<PlannedUpdate>>()
  for (const update of updates) {
    const queue = byChat.get(update.chatId)
    if (queue === undefined) byChat.set(update.chatId, [update])
    else queue.push(update)
  }
  const position = new Map<number, number>()
  const ready = new ReadyChats()
  for (const chatId of byChat.keys()) {
    position.set(chatId, 0)
    ready.push(chatId)
  }

  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency })
  const targets = options.baseUrls.map((url) => new URL(url))
  let posted = 0
  const ackLatencies: Array<number> = []
  const rejected: Record<string, number> = {}
  const firstSentAt = new Map<number, number>()
  let remaining = updates.length
  let lastAckAt = 0
  const startedAt = Date.now()
  // The n-th first attempt's slot; a worker waits for its slot, so the pace holds whatever the answers.
  let nextSlot = performance.now()
  const pace = async () => {
    if (options.ratePerSecond === undefined) return
    const slot = nextSlot
    nextSlot += 1000 / options.ratePerSecond
    const wait = slot - performance.now()
    if (wait > 0) await sleep(wait)
  }

  const worker = async () => {
    while (true) {
      if (aborted()) {
        ready.close()
        return
      }
      const chatId = await ready.take()
      if (chatId === undefined) return
      const queue = byChat.get(chatId)!
      const index = position.get(chatId)!
      const update = queue[index]!
      if (!firstSentAt.has(update.updateId)) {
        await pace()
        firstSentAt.set(update.updateId, Date.now())
      }
      const began = performance.now()
      const answer = await post(agent, targets[posted++ % targets.length]!, options.secret, update.body)
      const elapsed = performance.now() - began
      if (typeof answer.status === "number" && answer.status >= 200 && answer.status < 300) {
        ackLatencies.push(elapsed)
        lastAckAt = Date.now()
        remaining--
        if (index + 1 < queue.length) {
          position.set(chatId, index + 1)
          ready.push(chatId)
        }
        if (remaining === 0) ready.close()
        continue
      }
      const key = String(answer.status)
      rejected[key] = (rejected[key] ?? 0) + 1
      // The chat stays blocked until its update was accepted; the connection serves others meanwhile.
      const waitMs = (answer.retryAfterSeconds ?? 1) * 1000
      setTimeout(() => ready.push(chatId), waitMs)
    }
  }

  // Progress and completion from the stand-in's counters (a tool's polling loop, every 100 ms).
  let completeAt: number | undefined
  let stalled = false
  const watch = async () => {
    let lastCount = -1
    let lastChangeAt = Date.now()
    let lastLogAt = Date.now()
    while (true) {
      await sleep(100)
      const stats = await standInStats(options.standInUrl)
      const tagged = stats.taggedDistinct - baseline.taggedDistinct
      const starts = stats.untagged - baseline.untagged
      const now = Date.now()
      if (stats.sendMessage !== lastCount) {
        lastCount = stats.sendMessage
        lastChangeAt = now
      }
      if (now - lastLogAt >= 5_000) {
        lastLogAt = now
        log(`  … ${updates.length - remaining}/${updates.length} acked, ${tagged + starts}/${updates.length} replied`)
      }
      if (remaining === 0 && tagged >= expectedTagged && starts >= expectedStarts) {
        completeAt = now
        return
      }
      if (now - Math.max(lastChangeAt, lastAckAt, startedAt) > options.stallTimeoutMs) {
        ready.close()
        stalled = true
        return
      }
      if (aborted()) {
        log("  ! the contender is gone; stopping")
        ready.close()
        stalled = true
        return
      }
    }
  }

  await Promise.all([...Array.from({ length: options.concurrency }, worker), watch()])
  agent.destroy()
  if (completeAt !== undefined) await sleep(options.settleMs)

  // Loss and duplicates from the full record, restricted to this run's updates and chats.
  const replies = await standInReplies(options.standInUrl)
  const taggedArrivals = new Map(replies.tagged)
  const startArrivals = new Map(replies.untaggedByChat)
  let lost = 0
  let duplicated = 0
  let lastReplyAt = 0
  const replyLatencies: Array<number> = []
  for (const update of updates) {
    if (update.start) continue
    const arrivals = taggedArrivals.get(update.updateId)
    if (arrivals === undefined || arrivals.length === 0) {
      lost++
      continue
    }
    duplicated += arrivals.length - 1
    const first = Math.min(...arrivals)
    lastReplyAt = Math.max(lastReplyAt, first)
    replyLatencies.push(first - (firstSentAt.get(update.updateId) ?? startedAt))
  }
  // Warm-up chats are distinct from measured chats, so a chat's greetings are this run's.
  const startsPerChat = new Map<number, number>()
  for (const update of updates) if (update.start) startsPerChat.set(update.chatId, (startsPerChat.get(update.chatId) ?? 0) + 1)
  for (const [chatId, expected] of startsPerChat) {
    const arrivals = [...(startArrivals.get(chatId) ?? [])].sort((a, b) => a - b)
    lost += Math.max(0, expected - arrivals.length)
    duplicated += Math.max(0, arrivals.length - expected)
    const lastExpected = arrivals[Math.min(expected, arrivals.length) - 1]
    if (lastExpected !== undefined) lastReplyAt = Math.max(lastReplyAt, lastExpected)
  }
  const ackSeconds = Math.max(1, lastAckAt - startedAt) / 1000
  const e2eSeconds = Math.max(1, (completeAt === undefined ? Date.now() : lastReplyAt) - startedAt) / 1000
  if (stalled) log(`  ! gave up: no progress for ${options.stallTimeoutMs} ms; ${lost} update(s) without a reply`)
  return {
    updates: updates.length,
    starts: expectedStarts,
    acked: ackLatencies.length,
    rejected,
    ack: summarize(ackLatencies),
    ackSeconds,
    ackPerSecond: updates.length / ackSeconds,
    e2eSeconds,
    e2ePerSecond: completeAt === undefined ? 0 : updates.length / e2eSeconds,
    reply: summarize(replyLatencies),
    complete: completeAt !== undefined && lost === 0,
    lost,
    duplicated
  }
}
