// A Bot API outage in real time, end to end: the whole service in this process on an embedded
// PostgreSQL, the Bot API stand-in behind a proxy that answers every call with 500 for the length
// of the outage, updates arriving all along, then Telegram back. Checks that every reply arrives,
// in each chat's order, and prints what an operator would have seen meanwhile.
//   npm run outage                 a five-minute outage
//   npm run outage -- --minutes 1  shorter
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Clock, ConfigProvider, Console, Context, Duration, Effect, Layer, Logger, Redacted } from "effect"
import { HttpServer } from "effect/http"
import { chmodSync, mkdtempSync, rmSync } from "node:fs"
import { createServer, type IncomingMessage } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { makeAppLayer } from "../src/App.ts"
import { Database } from "../src/db/Database.ts"
import { EmbeddedDatabase } from "../src/db/EmbeddedDatabase.ts"
import { BotApiRecorder } from "../test/support/BotApiRecorder.ts"
import { sampleUpdate } from "../src/sandbox/sampleUpdate.ts"

const minutesArg = process.argv.indexOf("--minutes")
const OUTAGE = Duration.minutes(minutesArg === -1 ? 5 : Number(process.argv[minutesArg + 1]))
const CHATS = 5
const TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
const SECRET = "outage-script-secret"

const readBody = (req: IncomingMessage) =>
  new Promise<Buffer>((resolve) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => resolve(Buffer.concat(chunks)))
  })

/** Forwards to `target` unless down; down, it answers as a Telegram in trouble does. */
const faultProxy = (target: string) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly url: string; readonly server: ReturnType<typeof createServer>; down: boolean; refused: number }>(
      (resume) => {
        const state = { url: "", server: createServer(), down: false, refused: 0 }
        state.server.on("request", (req, res) => {
          void readBody(req).then(async (body) => {
            if (state.down) {
              state.refused++
              res.writeHead(500, { "content-type": "application/json" })
              return res.end(JSON.stringify({ ok: false, error_code: 500, description: "Internal Server Error" }))
            }
            const answer = await fetch(`${target}${req.url ?? "/"}`, {
              method: req.method ?? "POST",
              headers: { "content-type": req.headers["content-type"] ?? "application/json" },
              ...(req.method === "GET" ? {} : { body })
            })
            res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" })
            res.end(Buffer.from(await answer.arrayBuffer()))
          })
        })
        state.server.listen(0, "127.0.0.1", () => {
          const address = state.server.address()
          state.url = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`
          resume(Effect.succeed(state))
        })
      }
    ),
    (proxy) => Effect.callback<void>((resume) => void proxy.server.close(() => resume(Effect.void)))
  )

const program = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "steadfast-outage-"))
      chmodSync(dir, 0o777)
      return dir
    }),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )
  const pgContext = yield* Layer.build(EmbeddedDatabase.layer(join(dir, "postgres")))
  const databaseUrl = Redacted.value(Context.get(pgContext, EmbeddedDatabase).url)
  const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
  const proxy = yield* faultProxy(standIn.url)

  const warnings = new Map<string, number>()
  const quiet = Logger.make<unknown, void>((options) => {
    if (options.logLevel !== "Warn" && options.logLevel !== "Error") return
    const parts = Array.isArray(options.message) ? options.message : [options.message]
    const text = parts.map(String).join(" ")
    const source = text.replace(/\d+/g, "N").split(":")[0] ?? text
    warnings.set(source, (warnings.get(source) ?? 0) + 1)
  })
  const app = yield* Layer.build(
    makeAppLayer().pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({
        BOT_TOKEN: TOKEN,
        WEBHOOK_SECRET: SECRET,
        DATABASE_URL: databaseUrl,
        TELEGRAM_API_ROOT: proxy.url,
        HOST: "127.0.0.1",
        PORT: "0",
        SEND_RATE_PER_SECOND: "1000",
        HEALTH_OUTBOX_WARN_SECONDS: "60"
      }))),
      Layer.provide(Logger.layer([quiet]))
    )
  )
  const server = Context.get(app, HttpServer.HttpServer)
  const base = `http://127.0.0.1:${server.address._tag === "UnixPathAddress" ? 0 : server.address.port}`
  const { sql } = Context.get(app, Database)
  let started = yield* Clock.currentTimeMillis
  const elapsed = Effect.map(Clock.currentTimeMillis, (now) => Math.round((now - started) / 1000))

  const planned = new Map<number, Array<string>>()
  let nextUpdate = 1
  const postRound = Effect.forEach(Array.from({ length: CHATS }, (_, i) => 700 + i), (chatId) =>
    Effect.promise(async () => {
      const updateId = nextUpdate++
      const text = `reply ${updateId}`
      planned.set(chatId, [...(planned.get(chatId) ?? []), text])
      const response = await fetch(`${base}/webhook`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-telegram-bot-api-secret-token": SECRET },
        body: JSON.stringify(sampleUpdate({ updateId, chatId, text }))
      })
      if (response.status !== 200) throw new Error(`webhook answered ${response.status}`)
    }), { discard: true })
  const health = Effect.promise(() =>
    fetch(`${base}/health`).then(async (response) => {
      const body = await response.json() as {
        status: string
        checks: Record<string, ReadonlyArray<{ status: string; observedValue?: unknown }>>
      }
      return { http: response.status, outbox: body.checks["outbox:waiting"]?.[0] }
    })
  )
  const outboxRow = sql<{ open: number; max_attempts: number; expired: number; failed: number; sent: number }>`
    SELECT (count(*) FILTER (WHERE status IN ('pending', 'sending')))::int AS open,
      coalesce(max(attempts), 0)::int AS max_attempts,
      (count(*) FILTER (WHERE status = 'expired'))::int AS expired,
      (count(*) FILTER (WHERE status = 'failed'))::int AS failed,
      (count(*) FILTER (WHERE status = 'sent'))::int AS sent
    FROM outbox`

  // The outage hits a running service: it started (getMe answered) and replied once per chat.
  yield* postRound
  while ((yield* standIn.calls).filter((call) => call.method === "sendMessage").length < CHATS) yield* Effect.sleep("100 millis")
  proxy.down = true
  started = yield* Clock.currentTimeMillis
  yield* Console.log(`Bot API down for ${Duration.format(OUTAGE)}; ${CHATS} chats, one update per chat every 30 s`)
  const healthDuring: Array<string> = []
  while ((yield* elapsed) < Duration.toSeconds(OUTAGE)) {
    yield* postRound
    const [row] = yield* outboxRow
    const h = yield* health
    healthDuring.push(`${h.http}/${h.outbox?.status}`)
    yield* Console.log(
      `t=${yield* elapsed}s open=${row?.open} sent=${row?.sent} maxAttempts=${row?.max_attempts} expired=${row?.expired} ` +
        `health=${h.http} outbox:waiting=${h.outbox?.status} ${JSON.stringify(h.outbox?.observedValue)} refusedByProxy=${proxy.refused}`
    )
    yield* Effect.sleep("30 seconds")
  }
  proxy.down = false
  const recoveredAt = yield* Clock.currentTimeMillis
  yield* Console.log(`t=${yield* elapsed}s Bot API back`)
  while (true) {
    const [row] = yield* outboxRow
    if (row?.open === 0) break
    yield* Effect.sleep("1 second")
  }
  const drainSeconds = Math.round(((yield* Clock.currentTimeMillis) - recoveredAt) / 1000)
  const [row] = yield* outboxRow
  const calls = (yield* standIn.calls).filter((call) => call.method === "sendMessage")
  let inOrder = true
  for (const [chatId, texts] of planned) {
    const got = calls.filter((call) => Number(call.params["chat_id"]) === chatId).map((call) => String(call.params["text"]))
    const tokens = got.map((text) => /“([^”]*)”/.exec(text)?.[1] ?? text)
    if (JSON.stringify(tokens) !== JSON.stringify(texts)) {
      inOrder = false
      yield* Console.log(`chat ${chatId}: expected ${JSON.stringify(texts)}, got ${JSON.stringify(tokens)}`)
    }
  }
  // /health reads the samplers' last look (every 5 s).
  yield* Effect.sleep("6 seconds")
  const h = yield* health
  const total = [...planned.values()].reduce((sum, texts) => sum + texts.length, 0)
  yield* Console.log([
    "",
    `outage: ${Duration.format(OUTAGE)}, ${proxy.refused} Bot API calls answered 500`,
    `updates: ${total}; replies sent: ${row?.sent}; every chat's replies once and in order: ${inOrder}`,
    `most delivery attempts of one call: ${row?.max_attempts}; expired: ${row?.expired}; failed: ${row?.failed}`,
    `drained ${drainSeconds}s after the Bot API came back (backoff cap OUTBOX_RETRY_MAX_MS default 60 s)`,
    `/health during the outage (http/outbox:waiting): ${healthDuring.join(" ")}; after: ${h.http}/${h.outbox?.status}`,
    `warning and error lines logged, by kind: ${JSON.stringify(Object.fromEntries(warnings))}`
  ].join("\n"))
  if (!inOrder || row?.sent !== total) return yield* Effect.die(new Error("replies lost or out of order"))
})

NodeRuntime.runMain(Effect.scoped(program))
