// A grammY Composer bot through the real pipeline: webhook → inbox → handler in a transaction,
// its calls made at once to the Bot API stand-in over HTTP (after-commit calls through the outbox),
// on a real PostgreSQL.
import { assert, describe, it } from "@effect/vitest"
import { Composer, session } from "grammy"
import type { Update } from "grammy/types"
import { Context, Deferred, Effect, Exit, Layer, Scope } from "effect"
import type { BotDefinition } from "../../src/bot/Bot.ts"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { counter, type CounterContext, type CounterSession, counterStorage } from "../../src/bot/handlers/Counter.ts"
import { fallback } from "../../src/bot/handlers/Basics.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { awaitStatus, freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { callbackQueryUpdate } from "../support/Updates.ts"

const MAX_ATTEMPTS = 2
const env = { MAX_ATTEMPTS: String(MAX_ATTEMPTS), SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }

/** What the test bot's handlers saw, for assertions the Bot API calls alone cannot make. */
interface Seen {
  readonly replyResults: Array<unknown>
  /** Opened by the test: `/gate` waits on it after queueing its reply. */
  readonly gate: Deferred.Deferred<void>
  readonly gateReached: Deferred.Deferred<void>
}

const testBot = (seen: Seen): BotDefinition => {
  const bot = new Composer<SteadfastContext>()
  bot.command("hello", async (ctx) => {
    // Both calls are made at once and answer with Telegram's result.
    const chat = await ctx.getChat()
    seen.replyResults.push(await ctx.reply(`Hello ${ctx.from?.first_name} (${chat.type})`))
  })
  bot.on("message:photo", async (ctx) => {
    const largest = ctx.message.photo.at(-1)!
    await ctx.reply(`photo ${largest.file_id} ${largest.width}x${largest.height}: ${ctx.message.caption ?? ""}`)
  })
  bot.command("sql", async (ctx) => {
    const rows = await ctx.sql<{ n: number }>`SELECT 40 + ${2}::int AS n`
    await ctx.reply(`sql says ${rows[0]?.n}`)
  })
  bot.command("gate", async (ctx) => {
    await ctx.afterCommit.sendMessage(ctx.chat.id, "after the gate")
    await Effect.runPromise(Deferred.succeed(seen.gateReached, undefined))
    await Effect.runPromise(Deferred.await(seen.gate))
  })
  // Changes the counter's session, writes a row, replies at once and queues an after-commit reply,
  // then throws: the writes and the queued reply are rolled back; the reply made at once is recorded.
  const boom = new Composer<CounterContext>()
  boom.command(
    "boom",
    session({ initial: (): CounterSession => ({ count: 0 }), storage: counterStorage }),
    async (ctx) => {
      ctx.session.count += 100
      await ctx.sql`INSERT INTO users (telegram_id, first_name) VALUES (${ctx.from!.id}, 'boom')`
      await ctx.reply(`made at once ${ctx.update.update_id}`)
      await ctx.afterCommit.sendMessage(ctx.chat!.id, "never sent")
      throw new Error(`boom in update ${ctx.update.update_id}`)
    }
  )
  return [bot, boom, counter, fallback]
}

const startApp = (databaseUrl: string, seen: Seen) =>
  Effect.gen(function*() {
    const app = yield* Layer.build(testAppLayer({ databaseUrl, env, handlers: testBot(seen) }))
    return { base: yield* Effect.provideContext(baseUrl, app), standIn: Context.get(app, BotApiRecorder) }
  })

const makeSeen = Effect.gen(function*() {
  return { replyResults: [], gate: yield* Deferred.make<void>(), gateReached: yield* Deferred.make<void>() } satisfies Seen
})

const texts = (calls: ReadonlyArray<RecordedCall>, chatId: number) =>
  calls.filter((call) => call.method === "sendMessage" && Number(call.params["chat_id"]) === chatId).map((call) =>
    String(call.params["text"])
  )

/** Every call recorded so far has its answer: a call is recorded when it arrives, its result once answered. */
const answered = (calls: ReadonlyArray<RecordedCall>) => calls.every((call) => call.method !== "sendMessage" || call.result !== undefined)

let lastId = 30_000
const nextId = () => ++lastId

const photoUpdate = (chatId: number): Update => ({
  update_id: nextId(),
  message: {
    message_id: 1,
    date: 1767225600,
    from: { id: chatId, is_bot: false, first_name: "Ada" },
    chat: { id: chatId, type: "private", first_name: "Ada" },
    caption: "a cat",
    photo: [
      { file_id: "AgAC-small", file_unique_id: "s", width: 90, height: 60 },
      { file_id: "AgAC-large", file_unique_id: "l", width: 1280, height: 853, file_size: 120_000 }
    ]
  }
})

const callbackUpdate = (chatId: number, messageId: number, data: string): Update =>
  callbackQueryUpdate({ updateId: nextId(), chatId, messageId, data, messageText: "Count: 0" })

describe("a grammY Composer bot in the pipeline", () => {
  it.live(
    "commands, photos, keyboards and sessions work as in grammY; calls answer with Telegram's result; sessions survive a restart",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("grammy_bot"))
        const seen = yield* makeSeen
        const chatId = 810_001
        const post = (base: string, update: Update) =>
          Effect.flatMap(postUpdate(base, update), (response) => Effect.sync(() => assert.strictEqual(response.status, 200, response.body)))

        const first = yield* Scope.make()
        const app = yield* startApp(databaseUrl, seen).pipe(Scope.provide(first))

        // A command: getChat and the reply went to the Bot API when they were made.
        yield* post(app.base, sampleUpdate({ updateId: nextId(), chatId, text: "/hello" }))
        const afterHello = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 1, "20 seconds")
        yield* eventually("the reply's result", Effect.sync(() => seen.replyResults.length), (n) => n === 1, { timeout: "10 seconds" })
        assert.deepStrictEqual(texts(afterHello, chatId), ["Hello Ada (private)"])
        assert.isTrue(afterHello.some((call) => call.method === "getChat" && Number(call.params["chat_id"]) === chatId))
        const replied = seen.replyResults[0] as { message_id?: unknown; text?: unknown }
        assert.strictEqual(replied.text, "Hello Ada (private)", "ctx.reply resolves to the sent Message")
        assert.isNumber(replied.message_id)

        // A photo handler reads message.photo and caption: the whole update reaches it.
        yield* post(app.base, photoUpdate(chatId))
        const afterPhoto = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 2, "20 seconds")
        assert.strictEqual(texts(afterPhoto, chatId)[1], "photo AgAC-large 1280x853: a cat")

        // The transaction's SQL from the context.
        yield* post(app.base, sampleUpdate({ updateId: nextId(), chatId, text: "/sql" }))
        const afterSql = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 3, "20 seconds")
        assert.strictEqual(texts(afterSql, chatId)[2], "sql says 42")

        // /count with an inline keyboard, then two taps on +1: answered, edited, counted in the session.
        yield* post(app.base, sampleUpdate({ updateId: nextId(), chatId, text: "/count" }))
        const afterCount = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 4 && answered(calls), "20 seconds")
        const countMessage = afterCount.filter((call) => call.method === "sendMessage").at(-1)!
        assert.strictEqual(countMessage.params["text"], "Count: 0")
        assert.deepStrictEqual(countMessage.params["reply_markup"], { inline_keyboard: [[{ text: "+1", callback_data: "count:+1" }]] })
        const counterId = (countMessage.result as { message_id: number }).message_id
        for (const _ of [1, 2]) yield* post(app.base, callbackUpdate(chatId, counterId, "count:+1"))
        const edits = (calls: ReadonlyArray<RecordedCall>) => calls.filter((call) => call.method === "editMessageText")
        const afterTaps = yield* app.standIn.awaitCalls((calls) => edits(calls).length === 2, "20 seconds")
        assert.deepStrictEqual(edits(afterTaps).map((call) => [call.params["message_id"], call.params["text"]]), [[counterId, "Count: 1"], [
          counterId,
          "Count: 2"
        ]])
        const answers = afterTaps.filter((call) => call.method === "answerCallbackQuery").map((call) => call.params["text"])
        assert.deepStrictEqual(answers, ["Now 1", "Now 2"])
        // Each answer precedes its edit: the order the handler made them in.
        const order = afterTaps.filter((call) => call.method === "answerCallbackQuery" || call.method === "editMessageText").map((call) =>
          call.method
        )
        assert.deepStrictEqual(order, ["answerCallbackQuery", "editMessageText", "answerCallbackQuery", "editMessageText"])

        // Restart: a new instance on the same database still has the session.
        yield* Scope.close(first, Exit.void)
        const second = yield* startApp(databaseUrl, seen)
        yield* post(second.base, sampleUpdate({ updateId: nextId(), chatId, text: "/count" }))
        const afterRestart = yield* second.standIn.awaitCalls((calls) => texts(calls, chatId).length === 1, "20 seconds")
        assert.deepStrictEqual(texts(afterRestart, chatId), ["Count: 2"])
      }),
    120_000
  )

  it.live(
    "a handler that throws after changing its session, writing and replying is retried, then dead-lettered: nothing of it kept, its after-commit call never sent, its reply sent once",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("grammy_rollback"))
        const pg = yield* pgProbe(databaseUrl)
        const seen = yield* makeSeen
        const app = yield* startApp(databaseUrl, seen)
        const chatId = 810_002
        yield* postUpdate(app.base, sampleUpdate({ updateId: nextId(), chatId, text: "/count" }))
        const counted = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 1 && answered(calls), "20 seconds")
        const countMessage = counted.filter((call) => call.method === "sendMessage").at(-1)!
        yield* app.standIn.clear
        const tap = callbackUpdate(chatId, (countMessage.result as { message_id: number }).message_id, "count:+1")
        yield* postUpdate(app.base, tap)
        yield* app.standIn.awaitCalls((calls) => calls.some((call) => call.method === "editMessageText"), "20 seconds")

        const boomId = nextId()
        yield* postUpdate(app.base, sampleUpdate({ updateId: boomId, chatId, text: "/boom" }))
        const dead = yield* awaitStatus(pg, boomId, "dead", "60 seconds")
        assert.strictEqual(dead.attempts, MAX_ATTEMPTS)
        assert.include(dead.last_error, `boom in update ${boomId}`)

        // The chat goes on after the dead letter, and the session is as the tap left it.
        yield* postUpdate(app.base, sampleUpdate({ updateId: nextId(), chatId, text: "/count" }))
        const calls = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 2, "20 seconds")
        assert.deepStrictEqual(texts(calls, chatId), [`made at once ${boomId}`, "Count: 1"])
        assert.deepStrictEqual(yield* pg.query(`SELECT value FROM sessions WHERE key = $1`, [`counter:${chatId}`]), [{
          value: { count: 1 }
        }])
        assert.deepStrictEqual(yield* pg.query(`SELECT 1 FROM users WHERE telegram_id = $1`, [chatId]), [])
        assert.deepStrictEqual(yield* pg.query(`SELECT method FROM outbox WHERE update_id = $1`, [boomId]), [])
        assert.isFalse(calls.some((call) => call.params["text"] === "never sent"))
        assert.strictEqual(
          calls.filter((call) => call.params["text"] === `made at once ${boomId}`).length,
          1,
          "the re-run got the recorded reply"
        )
      }),
    120_000
  )

  it.live("ctx.afterCommit's calls are sent only once the update's transaction has committed", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* Effect.promise(() => freshDatabase("grammy_commit"))
      const pg = yield* pgProbe(databaseUrl)
      const seen = yield* makeSeen
      const app = yield* startApp(databaseUrl, seen)
      const chatId = 810_003
      const updateId = nextId()
      yield* postUpdate(app.base, sampleUpdate({ updateId, chatId, text: "/gate" }))
      yield* Deferred.await(seen.gateReached)
      // The handler has queued its call and is still running: nothing was sent, nothing committed.
      assert.deepStrictEqual(texts(yield* app.standIn.calls, chatId), [])
      assert.notStrictEqual((yield* inboxRow(pg, updateId))?.status, "done")
      assert.deepStrictEqual(yield* pg.query(`SELECT 1 FROM outbox WHERE update_id = $1`, [updateId]), [])
      yield* Deferred.succeed(seen.gate, undefined)
      const calls = yield* app.standIn.awaitCalls((calls) => texts(calls, chatId).length === 1, "20 seconds")
      assert.deepStrictEqual(texts(calls, chatId), ["after the gate"])
      yield* eventually("the update done", inboxRow(pg, updateId), (row) => row?.status === "done", { timeout: "10 seconds" })
    }), 60_000)
})
