// A minimal Bot API stand-in for the benchmark, run as its own process:
//   node bench/standIn.ts [--port N] [--delay-ms N]
// It prints "stand-in listening on <url>" once ready. Every call is answered after the delay
// with a valid Bot API answer; sendMessage calls are recorded (chat, update tag, arrival time)
// and read back through GET /__stats (counters, cheap enough to poll) and GET /__replies;
// sendInvoice and answerPreCheckoutQuery calls are recorded too (payload, query id, arrival time
// as Date.now() of this process: the bench runs on one machine, so it compares with the driver's)
// and read back through GET /__payments;
// POST /__delay?ms=N changes the delay (the warm-up runs without one).
//
// Why not src/sandbox/BotApiStandIn.ts: it keeps every call in an immutable array that is
// copied on each call (quadratic over a run of thousands of calls) and publishes each change
// to subscribers; fine for tests, but the stand-in must never be the bottleneck here.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { parseArgs } from "node:util"
import {
  replyTag,
  type InvoiceRecord,
  type PaymentsSnapshot,
  type PreCheckoutAnswerRecord,
  type RepliesSnapshot,
  type StatsSnapshot
} from "./protocol.ts"

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    "delay-ms": { type: "string", default: "0" }
  }
})
let delayMs = Number(values["delay-ms"])

let sendMessage = 0
let otherCalls = 0
let badCalls = 0
let lastMessageId = 0
let firstAt = 0
let lastAt = 0
/** update id → arrival times (ms since epoch) of its quoted replies. */
const tagged = new Map<number, Array<number>>()
/** chat id → arrival times of replies that carry no update tag (/start greetings). */
const untagged = new Map<number, Array<number>>()
let duplicates = 0
let untaggedTotal = 0
const invoices: Array<InvoiceRecord> = []
const preCheckoutAnswers: Array<PreCheckoutAnswerRecord> = []

const json = (res: ServerResponse, status: number, body: unknown) => {
  const payload = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) })
  res.end(payload)
}

const readBody = (req: IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.once("error", reject)
  })

const parseParams = (contentType: string, body: string): Record<string, unknown> | undefined => {
  if (body.trim() === "") return {}
  try {
    if (contentType.includes("application/json")) {
      const parsed: unknown = JSON.parse(body)
      return typeof parsed === "object" && parsed !== null ? { ...parsed } : undefined
    }
    if (contentType.includes("application/x-www-form-urlencoded")) return Object.fromEntries(new URLSearchParams(body))
  } catch {
    return undefined
  }
  return undefined
}

const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

const toInteger = (value: unknown): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" ? Number(value) : NaN
  return Number.isSafeInteger(n) ? n : undefined
}

const bot = { id: 123456, is_bot: true, first_name: "Bench", username: "bench_bot" }

const record = (chatId: number, text: string, at: number) => {
  sendMessage++
  if (firstAt === 0) firstAt = at
  lastAt = at
  const tag = replyTag(text)
  if (tag !== undefined) {
    const seen = tagged.get(tag)
    if (seen === undefined) tagged.set(tag, [at])
    else {
      seen.push(at)
      duplicates++
    }
    return
  }
  untaggedTotal++
  const seen = untagged.get(chatId)
  if (seen === undefined) untagged.set(chatId, [at])
  else seen.push(at)
}

const answer = (method: string, params: Record<string, unknown>, at: number): { status: number; body: unknown } => {
  switch (method) {
    case "getMe":
      return {
        status: 200,
        body: { ok: true, result: { ...bot, can_join_groups: true, can_read_all_group_messages: false, supports_inline_queries: false } }
      }
    case "sendMessage": {
      const chatId = toInteger(params["chat_id"])
      const text = params["text"]
      if (chatId === undefined || typeof text !== "string" || text === "") {
        badCalls++
        return { status: 400, body: { ok: false, error_code: 400, description: "Bad Request: chat_id or text missing" } }
      }
      record(chatId, text, at)
      return {
        status: 200,
        body: {
          ok: true,
          result: {
            message_id: ++lastMessageId,
            date: Math.floor(at / 1000),
            chat: { id: chatId, type: "private", first_name: "Bench user" },
            from: bot,
            text
          }
        }
      }
    }
    case "sendInvoice": {
      const chatId = toInteger(params["chat_id"])
      const payload = params["payload"]
      const currency = params["currency"]
      const prices = typeof params["prices"] === "string" ? parseJson(params["prices"]) : params["prices"]
      const amounts = Array.isArray(prices)
        ? prices.map((price: unknown) =>
          typeof price === "object" && price !== null && "amount" in price ? toInteger(price.amount) : undefined
        )
        : []
      if (
        chatId === undefined || typeof payload !== "string" || typeof currency !== "string" || amounts.length === 0 ||
        amounts.some((amount) => amount === undefined)
      ) {
        badCalls++
        return { status: 400, body: { ok: false, error_code: 400, description: "Bad Request: invoice fields missing" } }
      }
      const amount = amounts.reduce<number>((sum, value) => sum + (value ?? 0), 0)
      invoices.push({ chatId, payload, currency, amount, at })
      const title = typeof params["title"] === "string" ? params["title"] : "Invoice"
      const description = typeof params["description"] === "string" ? params["description"] : ""
      return {
        status: 200,
        body: {
          ok: true,
          result: {
            message_id: ++lastMessageId,
            date: Math.floor(at / 1000),
            chat: { id: chatId, type: "private", first_name: "Bench user" },
            from: bot,
            invoice: { title, description, start_parameter: "", currency, total_amount: amount }
          }
        }
      }
    }
    case "answerPreCheckoutQuery": {
      const id = params["pre_checkout_query_id"]
      const ok = params["ok"]
      if (typeof id !== "string" || (ok !== true && ok !== false && ok !== "true" && ok !== "false")) {
        badCalls++
        return { status: 400, body: { ok: false, error_code: 400, description: "Bad Request: pre_checkout_query_id or ok missing" } }
      }
      const errorMessage = params["error_message"]
      preCheckoutAnswers.push({
        id,
        ok: ok === true || ok === "true",
        errorMessage: typeof errorMessage === "string" ? errorMessage : undefined,
        at
      })
      return { status: 200, body: { ok: true, result: true } }
    }
    case "getWebhookInfo":
      otherCalls++
      return { status: 200, body: { ok: true, result: { url: "", has_custom_certificate: false, pending_update_count: 0 } } }
    default:
      otherCalls++
      return { status: 200, body: { ok: true, result: true } }
  }
}

const stats = (): StatsSnapshot => ({
  sendMessage,
  taggedDistinct: tagged.size,
  duplicates,
  untagged: untaggedTotal,
  otherCalls,
  badCalls,
  firstAt,
  lastAt
})

const replies = (): RepliesSnapshot => ({
  ...stats(),
  tagged: Array.from(tagged, ([updateId, at]) => [updateId, at]),
  untaggedByChat: Array.from(untagged, ([chatId, at]) => [chatId, at])
})

const server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  const at = Date.now()
  const url = req.url ?? "/"
  if (req.method === "GET" && url === "/__stats") return json(res, 200, stats())
  if (req.method === "GET" && url === "/__replies") return json(res, 200, replies())
  if (req.method === "GET" && url === "/__payments") return json(res, 200, { invoices, preCheckoutAnswers } satisfies PaymentsSnapshot)
  const setDelay = /^\/__delay\?ms=(\d+)$/.exec(url)
  if (req.method === "POST" && setDelay !== null) {
    delayMs = Number(setDelay[1])
    return json(res, 200, { delayMs })
  }
  readBody(req).then((body) => {
    const route = /^\/bot[^/]+\/([A-Za-z0-9_]+)$/.exec(url.split("?")[0] ?? "")
    if (route === null) return json(res, 404, { ok: false, error_code: 404, description: "Not Found" })
    const params = parseParams(req.headers["content-type"] ?? "", body)
    if (params === undefined) {
      badCalls++
      return json(res, 400, { ok: false, error_code: 400, description: "Bad Request: can't parse request body" })
    }
    const result = answer(route[1] ?? "", params, at)
    if (delayMs > 0) setTimeout(() => json(res, result.status, result.body), delayMs)
    else json(res, result.status, result.body)
  }).catch((error: unknown) => {
    process.stderr.write(`stand-in: ${String(error)}\n`)
    if (!res.headersSent) json(res, 500, { ok: false, error_code: 500, description: "Internal Server Error" })
  })
})
server.listen(Number(values.port), "127.0.0.1", () => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  process.stdout.write(`stand-in listening on http://127.0.0.1:${port} (delay ${delayMs} ms)\n`)
})
const stop = () => {
  server.close(() => process.exit(0))
  server.closeAllConnections()
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
