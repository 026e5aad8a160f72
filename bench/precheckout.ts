// The pre-checkout scenario (issue 5): how long a buyer waits for steadfast's answer to a
// pre_checkout_query while the service handles a steady stream of ordinary updates.
//
// 1. Orders: one `/buy credits_100` message per buyer; the stand-in records each sendInvoice, whose
//    `payload` (signed by steadfast) is what Telegram would echo back in the pre-checkout query.
// 2. Load: ordinary text updates at `backgroundRate`/s over `chats` chats (a chat's next update
//    only after its previous one was acked with a 2xx, as Telegram does) and, at the same time,
//    pre_checkout_query updates at `queryRate`/s, one per order, with the order's amount and payload.
// 3. Latency: from the 2xx ack of a pre-checkout update (Date.now() here, when the answer's body
//    ended) to the arrival of the matching answerPreCheckoutQuery at the stand-in (Date.now() in
//    the stand-in's process). Both are the same machine's wall clock, so they compare directly;
//    their resolution is 1 ms.
import { Agent } from "node:http"
import { setTimeout as sleep } from "node:timers/promises"
import { sampleUpdate } from "../src/sandbox/sampleUpdate.ts"
import { post, standInStats, summarize, type LatencySummary } from "./driver.ts"
import { isHealthBody, numberField } from "./monitor.ts"
import { isPaymentsSnapshot, taggedText, type PaymentsSnapshot } from "./protocol.ts"

export interface PreCheckoutOptions {
  readonly baseUrl: string
  readonly secret: string
  readonly standInUrl: string
  /** steadfast's GET /health, for the inbox backlog at the end. */
  readonly healthUrl: string
  /** Telegram's max_connections: requests in flight at once, background and pre-checkout together. */
  readonly concurrency: number
  readonly durationMs: number
  /** Ordinary updates per second. */
  readonly backgroundRate: number
  /** Pre-checkout queries per second; one order (and buyer) per query. */
  readonly queryRate: number
  readonly chats: number
  readonly firstUpdateId: number
  readonly firstChatId: number
  readonly firstBuyerId: number
  /** After the load, wait at most this long for the answers still missing. */
  readonly answerWaitMs: number
  readonly aborted: () => boolean
  readonly log: (line: string) => void
}

export interface PreCheckoutResult {
  readonly orders: number
  /** Buyers whose /buy produced an invoice. */
  readonly invoices: number
  readonly setupSeconds: number
  readonly queries: number
  /** Pre-checkout updates acked 2xx. */
  readonly acked: number
  /** Distinct queries answered (with ok:true or ok:false). */
  readonly answered: number
  readonly answeredOk: number
  readonly answeredDeclined: number
  /** Error messages of ok:false answers, with their counts. */
  readonly declined: Readonly<Record<string, number>>
  readonly notAnswered: number
  /** Answers beyond the first for one query. */
  readonly duplicateAnswers: number
  /** 2xx ack of the pre-checkout update → answerPreCheckoutQuery at the stand-in (ms). */
  readonly latency: LatencySummary
  /** First attempt to post the pre-checkout update → answerPreCheckoutQuery at the stand-in (ms). */
  readonly sendToAnswer: LatencySummary
  /** Webhook ack latency of the pre-checkout updates (ms). */
  readonly queryAck: LatencySummary
  readonly background: {
    readonly targetPerSecond: number
    readonly sent: number
    readonly acked: number
    /** Acked ordinary updates per second of load. */
    readonly achievedPerSecond: number
    readonly ack: LatencySummary
    /** sendMessage calls the stand-in received during the load (replies to the ordinary updates). */
    readonly repliesDuringLoad: number
    /** Sends the pacer skipped: every chat was awaiting its ack, or all `concurrency` connections were busy. */
    readonly deferred: number
  }
  readonly rejected: Readonly<Record<string, number>>
  readonly loadSeconds: number
  /** GET /health inbox:backlog pending, right when the load ended and after the wait for answers. */
  readonly backlogAtLoadEnd: number | undefined
  readonly backlogAfterWait: number | undefined
}

const paymentsOf = async (standInUrl: string): Promise<PaymentsSnapshot> => {
  const response = await fetch(`${standInUrl}/__payments`)
  if (!response.ok) throw new Error(`GET /__payments: ${response.status}`)
  const body: unknown = await response.json()
  if (!isPaymentsSnapshot(body)) throw new Error("stand-in /__payments: unexpected answer")
  return body
}

const inboxBacklog = async (healthUrl: string): Promise<number | undefined> => {
  try {
    const response = await fetch(healthUrl, { signal: AbortSignal.timeout(2_000) })
    const body: unknown = await response.json()
    if (!isHealthBody(body)) return undefined
    return numberField(body.checks?.["inbox:backlog"]?.[0]?.observedValue, "pending")
  } catch {
    return undefined
  }
}

const isOk = (status: number | "network" | "timeout"): boolean => typeof status === "number" && status >= 200 && status < 300

export const runPreCheckout = async (options: PreCheckoutOptions): Promise<PreCheckoutResult> => {
  const { log } = options
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency })
  const target = new URL(options.baseUrl)
  const rejected: Record<string, number> = {}
  const reject = (status: number | "network" | "timeout") => {
    rejected[String(status)] = (rejected[String(status)] ?? 0) + 1
  }
  let nextUpdateId = options.firstUpdateId

  // 1. Orders --------------------------------------------------------------------------------
  const orders = Math.max(1, Math.round((options.queryRate * options.durationMs) / 1000))
  const buyers = Array.from({ length: orders }, (_, i) => options.firstBuyerId + i)
  const setupStarted = Date.now()
  const before = await paymentsOf(options.standInUrl)
  const buyQueue = buyers.map((buyer) => ({
    buyer,
    body: JSON.stringify(sampleUpdate({
      updateId: nextUpdateId++,
      chatId: buyer,
      date: Math.floor(Date.now() / 1000),
      firstName: `Buyer${buyer}`,
      username: `buyer_${buyer}`,
      text: "/buy credits_100"
    }))
  }))
  const buyWorker = async () => {
    while (!options.aborted()) {
      const next = buyQueue.shift()
      if (next === undefined) return
      const answer = await post(agent, target, options.secret, next.body)
      if (!isOk(answer.status)) {
        reject(answer.status)
        await sleep((answer.retryAfterSeconds ?? 1) * 1000)
        buyQueue.push(next)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(options.concurrency, orders) }, buyWorker))
  const invoiceOf = new Map<number, { readonly payload: string; readonly amount: number; readonly currency: string }>()
  const wanted = new Set(buyers)
  const setupDeadline = Date.now() + 60_000
  while (invoiceOf.size < orders && Date.now() < setupDeadline && !options.aborted()) {
    const payments = await paymentsOf(options.standInUrl)
    for (const invoice of payments.invoices.slice(before.invoices.length)) {
      if (wanted.has(invoice.chatId) && !invoiceOf.has(invoice.chatId)) {
        invoiceOf.set(invoice.chatId, { payload: invoice.payload, amount: invoice.amount, currency: invoice.currency })
      }
    }
    if (invoiceOf.size < orders) await sleep(100)
  }
  const setupSeconds = (Date.now() - setupStarted) / 1000
  log(`  ${invoiceOf.size}/${orders} invoices issued in ${setupSeconds.toFixed(1)} s`)
  if (invoiceOf.size === 0) throw new Error("no invoice reached the stand-in: /buy credits_100 did not issue any")

  // 2. Load ----------------------------------------------------------------------------------
  interface Query {
    readonly id: string
    readonly body: string
    firstSentAt: number
    ackedAt: number | undefined
  }
  const queries: Array<Query> = Array.from(invoiceOf, ([buyer, invoice], i) => {
    const id = `bench-pcq-${options.firstUpdateId}-${i}`
    return {
      id,
      body: JSON.stringify({
        update_id: nextUpdateId++,
        pre_checkout_query: {
          id,
          from: { id: buyer, is_bot: false, first_name: `Buyer${buyer}` },
          currency: invoice.currency,
          total_amount: invoice.amount,
          invoice_payload: invoice.payload
        }
      }),
      firstSentAt: 0,
      ackedAt: undefined
    }
  })
  // Retries (after a non-2xx) are sent again once their time has come.
  const queryDue: Array<{ readonly query: Query; readonly at: number }> = []

  // Background chats: each one's pending update (resent after a non-2xx) and its message count.
  const ready: Array<number> = []
  for (let i = 0; i < options.chats; i++) ready.push(options.firstChatId + i)
  const pending = new Map<number, string>()
  const messageCount = new Map<number, number>()
  const backgroundBody = (chatId: number): string => {
    const existing = pending.get(chatId)
    if (existing !== undefined) return existing
    const updateId = nextUpdateId++
    const count = (messageCount.get(chatId) ?? 0) + 1
    messageCount.set(chatId, count)
    const body = JSON.stringify(sampleUpdate({
      updateId,
      chatId,
      messageId: count,
      date: Math.floor(Date.now() / 1000),
      firstName: `User${chatId}`,
      username: `user_${chatId}`,
      text: taggedText(updateId, chatId)
    }))
    pending.set(chatId, body)
    return body
  }

  let inFlight = 0
  let backgroundSent = 0
  let backgroundAcked = 0
  let deferred = 0
  const backgroundAck: Array<number> = []
  const queryAck: Array<number> = []
  const inFlightDone: Array<Promise<void>> = []
  const statsBefore = await standInStats(options.standInUrl)

  const sendBackground = (chatId: number) => {
    const body = backgroundBody(chatId)
    inFlight++
    backgroundSent++
    const began = Date.now()
    inFlightDone.push(
      post(agent, target, options.secret, body).then((answer) => {
        inFlight--
        if (isOk(answer.status)) {
          backgroundAcked++
          backgroundAck.push(Date.now() - began)
          pending.delete(chatId)
          ready.push(chatId)
        } else {
          reject(answer.status)
          setTimeout(() => ready.push(chatId), (answer.retryAfterSeconds ?? 1) * 1000)
        }
      })
    )
  }
  const sendQuery = (query: Query) => {
    inFlight++
    if (query.firstSentAt === 0) query.firstSentAt = Date.now()
    const began = Date.now()
    inFlightDone.push(
      post(agent, target, options.secret, query.body).then((answer) => {
        inFlight--
        if (isOk(answer.status)) {
          query.ackedAt = Date.now()
          queryAck.push(query.ackedAt - began)
        } else {
          reject(answer.status)
          queryDue.push({ query, at: Date.now() + (answer.retryAfterSeconds ?? 1) * 1000 })
        }
      })
    )
  }

  const loadStarted = Date.now()
  const loadEnd = loadStarted + options.durationMs
  let queriesStarted = 0
  let lastLogAt = loadStarted
  log(
    `  load: ${options.backgroundRate} updates/s over ${options.chats} chats + ${options.queryRate} pre-checkout queries/s for ${
      options.durationMs / 1000
    } s`
  )
  while (!options.aborted()) {
    const now = Date.now()
    if (now >= loadEnd && queryDue.length === 0 && queriesStarted >= queries.length) break
    // Pre-checkout first: its time is set by the buyer's tap, not by the connection's availability.
    const queriesDue = Math.min(queries.length, Math.floor(((now - loadStarted) * options.queryRate) / 1000) + 1)
    while (queriesStarted < queriesDue && inFlight < options.concurrency) sendQuery(queries[queriesStarted++]!)
    for (let i = queryDue.length - 1; i >= 0 && inFlight < options.concurrency; i--) {
      if (queryDue[i]!.at <= now) sendQuery(queryDue.splice(i, 1)[0]!.query)
    }
    if (now < loadEnd) {
      const backgroundDue = Math.floor(((now - loadStarted) * options.backgroundRate) / 1000)
      while (backgroundSent < backgroundDue) {
        const chatId = inFlight < options.concurrency ? ready.shift() : undefined
        if (chatId === undefined) {
          deferred += backgroundDue - backgroundSent
          // Skipped, not owed: the rate is what a steady Telegram would deliver, not a catch-up burst.
          backgroundSent = backgroundDue
          break
        }
        sendBackground(chatId)
      }
    }
    if (now - lastLogAt >= 5_000) {
      lastLogAt = now
      log(
        `  … ${
          Math.round((now - loadStarted) / 1000)
        } s: ${backgroundAcked} ordinary updates acked, ${queryAck.length}/${queries.length} pre-checkout acked`
      )
    }
    await sleep(2)
  }
  const loadEndedAt = Date.now()
  const backlogAtLoadEnd = await inboxBacklog(options.healthUrl)
  const statsAtLoadEnd = await standInStats(options.standInUrl)
  await Promise.all(inFlightDone)
  agent.destroy()

  // 3. Answers -------------------------------------------------------------------------------
  const ids = new Set(queries.map((q) => q.id))
  const answerDeadline = Date.now() + options.answerWaitMs
  let payments = await paymentsOf(options.standInUrl)
  const answeredIds = () => new Set(payments.preCheckoutAnswers.filter((a) => ids.has(a.id)).map((a) => a.id))
  while (answeredIds().size < queries.length && Date.now() < answerDeadline && !options.aborted()) {
    await sleep(200)
    payments = await paymentsOf(options.standInUrl)
  }
  const backlogAfterWait = await inboxBacklog(options.healthUrl)

  const firstAnswer = new Map<string, { readonly ok: boolean; readonly errorMessage: string | undefined; readonly at: number }>()
  let duplicateAnswers = 0
  for (const answer of payments.preCheckoutAnswers) {
    if (!ids.has(answer.id)) continue
    const seen = firstAnswer.get(answer.id)
    if (seen === undefined || answer.at < seen.at) firstAnswer.set(answer.id, answer)
    if (seen !== undefined) duplicateAnswers++
  }
  const latencies: Array<number> = []
  const sendToAnswer: Array<number> = []
  const declined: Record<string, number> = {}
  let answeredOk = 0
  for (const query of queries) {
    const answer = firstAnswer.get(query.id)
    if (answer === undefined) continue
    if (answer.ok) answeredOk++
    else declined[answer.errorMessage ?? "?"] = (declined[answer.errorMessage ?? "?"] ?? 0) + 1
    if (query.ackedAt !== undefined) latencies.push(answer.at - query.ackedAt)
    if (query.firstSentAt > 0) sendToAnswer.push(answer.at - query.firstSentAt)
  }
  const loadSeconds = (loadEndedAt - loadStarted) / 1000
  const backgroundSeconds = Math.min(loadSeconds, options.durationMs / 1000)
  return {
    orders,
    invoices: invoiceOf.size,
    setupSeconds,
    queries: queries.length,
    acked: queryAck.length,
    answered: firstAnswer.size,
    answeredOk,
    answeredDeclined: firstAnswer.size - answeredOk,
    declined,
    notAnswered: queries.length - firstAnswer.size,
    duplicateAnswers,
    latency: summarize(latencies),
    sendToAnswer: summarize(sendToAnswer),
    queryAck: summarize(queryAck),
    background: {
      targetPerSecond: options.backgroundRate,
      sent: backgroundSent - deferred,
      acked: backgroundAcked,
      achievedPerSecond: backgroundAcked / Math.max(0.001, backgroundSeconds),
      ack: summarize(backgroundAck),
      repliesDuringLoad: statsAtLoadEnd.sendMessage - statsBefore.sendMessage,
      deferred
    },
    rejected,
    loadSeconds,
    backlogAtLoadEnd,
    backlogAfterWait
  }
}
