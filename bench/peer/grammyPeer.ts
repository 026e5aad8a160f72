// The peer the benchmark compares steadfast with: the plain way to run a grammY bot on a
// webhook. `webhookCallback` on `node:http`, a `pg` Pool of 10, the handler runs inside the
// webhook request and the request is answered once it finished (or 500 if it threw, so
// Telegram redelivers). Same environment variables as steadfast.
import { Bot, webhookCallback, type Context } from "grammy"
import type { UserFromGetMe } from "grammy/types"
import { createServer } from "node:http"
import pg from "pg"

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback
  if (value === undefined || value === "") throw new Error(`${name} is required`)
  return value
}

const token = env("BOT_TOKEN")
const secret = env("WEBHOOK_SECRET")
const pool = new pg.Pool({ connectionString: env("DATABASE_URL"), max: 10, application_name: "grammy-peer" })

// The same table steadfast's migration 0002 creates.
await pool.query(`
  CREATE TABLE IF NOT EXISTS users (
    telegram_id bigint PRIMARY KEY,
    username text,
    first_name text,
    language_code text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
  )`)

const botInfo: UserFromGetMe = {
  id: Number(token.split(":")[0]),
  is_bot: true,
  first_name: "Bench",
  username: "bench_bot",
  can_join_groups: true,
  can_read_all_group_messages: false,
  supports_inline_queries: false,
  can_connect_to_business: false,
  has_main_web_app: false,
  has_topics_enabled: false,
  allows_users_to_create_topics: false,
  can_manage_bots: false,
  supports_join_request_queries: false
}

const bot = new Bot(token, { client: { apiRoot: env("TELEGRAM_API_ROOT") }, botInfo })

const upsertUser = async (ctx: Context) => {
  const from = ctx.from
  if (from === undefined) return
  await pool.query(
    `INSERT INTO users (telegram_id, username, first_name, language_code)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (telegram_id) DO UPDATE SET
       username = excluded.username,
       first_name = excluded.first_name,
       language_code = excluded.language_code,
       last_seen = now()`,
    [from.id, from.username ?? null, from.first_name, from.language_code ?? null]
  )
}

bot.command("start", async (ctx) => {
  await upsertUser(ctx)
  await ctx.reply(`Hello, ${ctx.from?.first_name ?? "there"}! I am steadfast. Send /help to see what I can do.`)
})

bot.on("message:text", async (ctx) => {
  await upsertUser(ctx)
  const text = ctx.message.text
  const quoted = text.length > 3900 ? `${text.slice(0, 3900)}…` : text
  await ctx.reply(`I don't understand “${quoted}”. Try /help`)
})

const handle = webhookCallback(bot, "http", { secretToken: secret })

const server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  if (req.method !== "POST" || req.url !== "/webhook") {
    res.writeHead(404).end()
    return
  }
  handle(req, res).catch((error: unknown) => {
    process.stderr.write(`update failed: ${error instanceof Error ? error.message : String(error)}\n`)
    if (!res.headersSent) res.writeHead(500).end()
  })
})

const port = Number(env("PORT", "8080"))
const host = env("HOST", "0.0.0.0")
server.listen(port, host, () => {
  const address = server.address()
  process.stdout.write(`Listening on http://${host}:${typeof address === "object" && address !== null ? address.port : port}\n`)
})

const stop = () => {
  server.close(() => {
    pool.end().then(() => process.exit(0), () => process.exit(1))
  })
  server.closeIdleConnections()
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
