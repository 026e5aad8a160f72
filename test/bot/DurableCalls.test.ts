// A developer's own grammY `Bot`, handed to steadfast as it is: its calls answer at once with
// Telegram's result (the stand-in's), refusals throw where the handler can catch them, `bot.catch`
// and `bot.api` work, uploads go out, and an attempt past its deadline can do nothing more.
import { assert, describe, it } from "@effect/vitest"
import { Bot, GrammyError, HttpError, InputFile } from "grammy"
import type { Update } from "grammy/types"
import { Context, Deferred, Effect, Layer } from "effect"
import type { BotDefinition } from "../../src/bot/Bot.ts"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { Database } from "../../src/db/Database.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { baseUrl, testAppLayer, testEnv } from "../support/TestApp.ts"
import { awaitStatus, freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const CHANNEL = -1001234567890
const env = { SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200", UPDATE_TIMEOUT_MS: "1500" }

interface Seen {
  /** What `/late` could still do after its attempt ended, per run of it. */
  readonly late: Array<string>
  readonly lateGate: Deferred.Deferred<void>
}

const developersBot = (seen: Seen): BotDefinition => {
  // Its own token is never used: steadfast makes every call with the service's token.
  const bot = new Bot<SteadfastContext>("42:the-developers-own-token")
  bot.catch(async (error) => {
    await error.ctx.reply(`handled: ${error.error instanceof Error ? error.error.message : String(error.error)}`)
  })
  bot.command("progress", async (ctx) => {
    const status = await ctx.reply("⏳ working")
    await ctx.api.editMessageText(ctx.chat.id, status.message_id, "✅ done")
  })
  bot.command("post", async (ctx) => {
    // bot.api inside a handler is this update's client too.
    const posted = await bot.api.sendMessage(CHANNEL, `entry from ${ctx.chat.id}`)
    await ctx.sql`INSERT INTO test_posts (chat_id, message_id) VALUES (${ctx.chat.id}, ${posted.message_id})`
    await ctx.reply(`posted as ${posted.message_id}`)
  })
  bot.command("unpost", async (ctx) => {
    const rows = await ctx.sql<{ message_id: number }>`SELECT message_id FROM test_posts WHERE chat_id = ${ctx.chat.id}`
    await ctx.api.deleteMessage(CHANNEL, rows[0]!.message_id)
    await ctx.reply("unposted")
  })
  bot.command("refused", async (ctx) => {
    try {
      await ctx.api.sendMessage(ctx.chat.id, "")
      await ctx.reply("not refused?")
    } catch (error) {
      await ctx.reply(`caught: ${error instanceof GrammyError ? error.description : String(error)}`)
    }
  })
  bot.command("crash", () => {
    throw new Error("crashed on purpose")
  })
  bot.command("upload", (ctx) => ctx.replyWithDocument(new InputFile(Buffer.from("file body 42"), "notes.txt")))
  let lateRuns = 0
  bot.command("late", async (ctx) => {
    const run = ++lateRuns
    await ctx.sql`SELECT 1`
    // Waits past UPDATE_TIMEOUT_MS (the test opens the gate once the attempt has timed out): a
    // promise cannot be interrupted, so this code goes on after its attempt is over.
    await Effect.runPromise(Deferred.await(seen.lateGate))
    seen.late.push(await ctx.sql`SELECT 1`.then(() => `${run}: sql ran`, (error: unknown) => `${run}: sql refused: ${String(error)}`))
    seen.late.push(
      await ctx.reply("late").then(
        () => `${run}: reply sent`,
        (error: unknown) => `${run}: reply refused: ${error instanceof HttpError ? String(error.error) : String(error)}`
      )
    )
  })
  return [bot]
}

const startApp = (label: string, seen: Seen) =>
  Effect.gen(function*() {
    const databaseUrl = yield* Effect.promise(() => freshDatabase(label))
    const pg = yield* pgProbe(databaseUrl)
    yield* pg.query(`CREATE TABLE test_posts (chat_id bigint PRIMARY KEY, message_id bigint NOT NULL)`)
    const app = yield* Layer.build(testAppLayer({
      databaseUrl,
      env,
      handlers: developersBot(seen),
      botOptions: { onStart: (api) => api.setMyCommands([{ command: "progress", description: "show progress" }]) }
    }))
    return {
      base: yield* Effect.provideContext(baseUrl, app),
      standIn: Context.get(app, BotApiRecorder),
      pg,
      db: Context.get(app, Database)
    }
  })

const makeSeen = Effect.map(Deferred.make<void>(), (lateGate): Seen => ({ late: [], lateGate }))

let lastId = 70_000
const command = (chatId: number, text: string): Update => sampleUpdate({ updateId: ++lastId, chatId, text })

const sentTo = (calls: ReadonlyArray<RecordedCall>, chatId: number) =>
  calls.filter((call) => call.method === "sendMessage" && Number(call.params["chat_id"]) === chatId).map((call) =>
    String(call.params["text"])
  )

describe("a developer's grammY Bot with calls made at once", () => {
  it.live(
    "reply-then-edit by message_id, a stored message_id deleted by a later update, a caught refusal, bot.catch, an upload, a start-up hook",
    () =>
      Effect.gen(function*() {
        const seen = yield* makeSeen
        const app = yield* startApp("durable_calls", seen)
        const chatId = 710_001

        // The start-up hook ran through the Bot API, outside any update.
        yield* app.standIn.awaitCalls((calls) => calls.some((call) => call.method === "setMyCommands"), "20 seconds")

        const progress = command(chatId, "/progress")
        yield* postUpdate(app.base, progress)
        const edited = yield* app.standIn.awaitCalls(
          (calls) => calls.some((call) => call.method === "editMessageText" && call.result !== undefined),
          "20 seconds"
        )
        const sent = edited.find((call) => call.method === "sendMessage" && call.params["text"] === "⏳ working")!
        const edit = edited.find((call) => call.method === "editMessageText")!
        assert.strictEqual(edit.params["message_id"], (sent.result as { message_id: number }).message_id)
        assert.strictEqual((edit.result as { text: string }).text, "✅ done")
        yield* awaitStatus(app.pg, progress.update_id, "done")

        // A message_id kept in the bot's table by one update, deleted by a later one.
        yield* postUpdate(app.base, command(chatId, "/post"))
        yield* postUpdate(app.base, command(chatId, "/unpost"))
        const deleted = yield* app.standIn.awaitCalls((calls) => sentTo(calls, chatId).includes("unposted"), "20 seconds")
        const post = deleted.find((call) => call.method === "sendMessage" && Number(call.params["chat_id"]) === CHANNEL)!
        const deletion = deleted.find((call) => call.method === "deleteMessage")!
        assert.strictEqual(deletion.params["message_id"], (post.result as { message_id: number }).message_id)
        assert.strictEqual(deletion.result, true, "the stand-in deleted a message it had issued")

        // A refusal throws GrammyError inside the handler, where its try/catch sees it.
        yield* postUpdate(app.base, command(chatId, "/refused"))
        yield* app.standIn.awaitCalls((calls) => sentTo(calls, chatId).includes("caught: Bad Request: message text is empty"), "20 seconds")

        // An error bot.catch handles counts as handled: the update is done on its first attempt.
        const crash = command(chatId, "/crash")
        yield* postUpdate(app.base, crash)
        yield* app.standIn.awaitCalls((calls) => sentTo(calls, chatId).includes("handled: crashed on purpose"), "20 seconds")
        const crashed = yield* awaitStatus(app.pg, crash.update_id, "done")
        assert.strictEqual(crashed.attempts, 1)

        // An InputFile goes out as an upload, and the handler gets the sent Message.
        const upload = command(chatId, "/upload")
        yield* postUpdate(app.base, upload)
        const uploaded = yield* app.standIn.awaitCalls(
          (calls) => calls.some((call) => call.method === "sendDocument" && call.result !== undefined),
          "20 seconds"
        )
        const document = uploaded.find((call) => call.method === "sendDocument")!
        assert.deepStrictEqual(document.params["document"], { filename: "notes.txt", size: 12 })
        yield* awaitStatus(app.pg, upload.update_id, "done")
      }),
    90_000
  )

  it.live(
    "a handler that outlives UPDATE_TIMEOUT_MS can run no statement and make no call, and leaves no connection behind",
    () =>
      Effect.gen(function*() {
        const seen = yield* makeSeen
        const app = yield* startApp("durable_calls_late", seen)
        const chatId = 710_002
        const late = command(chatId, "/late")
        yield* postUpdate(app.base, late)
        yield* eventually(
          "the first attempt timed out",
          inboxRow(app.pg, late.update_id),
          (row) => (row?.last_error ?? "").includes("timed out"),
          {
            timeout: "20 seconds"
          }
        )
        yield* Deferred.succeed(seen.lateGate, undefined)
        yield* eventually(
          "what the late run tried",
          Effect.sync(() => seen.late.filter((entry) => entry.startsWith("1:"))),
          (entries) => entries.length === 2,
          { timeout: "20 seconds" }
        )
        const first = seen.late.filter((entry) => entry.startsWith("1:"))
        assert.match(first[0]!, /^1: sql refused: .*attempt is over/)
        assert.match(first[1]!, /^1: reply refused: .*attempt is over/)
        // The retry runs the handler again and finishes it.
        yield* awaitStatus(app.pg, late.update_id, "done")
        const sessions = yield* app.pg.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`
        )
        assert.strictEqual(sessions[0]?.n, 0, "no connection is left idle in a transaction")
        // The server's backstop for a transaction left open: the statements' limit and a margin.
        const backstop = yield* app.db.sql<{ idle_in_transaction_session_timeout: string }>`SHOW idle_in_transaction_session_timeout`
        assert.strictEqual(backstop[0]?.idle_in_transaction_session_timeout, "6500ms")
        assert.strictEqual(sentTo(yield* app.standIn.calls, chatId).filter((text) => text === "late").length, 1)
      }),
    90_000
  )
})

describe("the bot's own identity", () => {
  it.live(
    "a Bot API outage while getMe is asked is an outage, not an attempt: the update waits it out and is done, even with MAX_ATTEMPTS=1",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        // Every getMe fails for a while: the one at start, and those of the update's first runs
        // (each retried in place a few times).
        yield* standIn.script("getMe", Array.from({ length: 12 }, () => ({ status: 502 })))
        const databaseUrl = yield* Effect.promise(() => freshDatabase("getme_outage"))
        const probe = yield* pgProbe(databaseUrl)
        const service = yield* spawnService(testEnv(databaseUrl, standIn.url, { MAX_ATTEMPTS: "1", SEND_RATE_PER_SECOND: "10000" }))
        const update = command(710_003, "hello")
        assert.strictEqual((yield* postUpdate(service.baseUrl, update)).status, 200)
        const done = yield* awaitStatus(probe, update.update_id, "done", "60 seconds")
        assert.strictEqual(done.attempts, 1, "the runs that failed for want of getMe were not counted")
        const getMes = (yield* standIn.calls).filter((call) => call.method === "getMe").length
        assert.isAtLeast(getMes, 13, "getMe was asked until it answered")
      }),
    90_000
  )
})
