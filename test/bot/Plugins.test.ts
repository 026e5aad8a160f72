// grammY plugins in a developer's own `Bot` handed to steadfast, through the real pipeline: webhook →
// inbox → handler, its calls made at once to the Bot API stand-in over HTTP, on a real PostgreSQL.
import { assert, describe, it } from "@effect/vitest"
import { autoRetry } from "@grammyjs/auto-retry"
import {
  type Conversation,
  type ConversationData,
  type ConversationFlavor,
  conversations,
  createConversation,
  type VersionedState
} from "@grammyjs/conversations"
import { hydrate, type HydrateApiFlavor } from "@grammyjs/hydrate"
import { Menu } from "@grammyjs/menu"
import { bold, fmt } from "@grammyjs/parse-mode"
import { limit } from "@grammyjs/ratelimiter"
import { type Api, Bot, type Context, session, type SessionFlavor, type Transformer } from "grammy"
import type { InlineKeyboardMarkup, Update } from "grammy/types"
import { Context as EffectContext, Effect, Exit, Layer, Scope } from "effect"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { sqlSessionStorage } from "../../src/bot/SessionStorage.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, TEST_TOKEN, testAppLayer } from "../support/TestApp.ts"
import { freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { callbackQueryUpdate } from "../support/Updates.ts"

const env = { SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }

interface Settings {
  sound: boolean
}

type PluginContext = ConversationFlavor<SteadfastContext & SessionFlavor<Settings>>

/**
 * What hydrate makes of a sent message. Its context flavour is not a `Context` under
 * `exactOptionalPropertyTypes` (hydrate's typing, plain grammY too); its API flavour types the result.
 */
type HydratedMessage = Awaited<ReturnType<HydrateApiFlavor<Api>["sendMessage"]>>

// Storages are made once per process, like a bot module's: each namespace belongs to one of them.
const settingsStorage = sqlSessionStorage<Settings>({ namespace: "plugins-settings" })
const conversationStorage = sqlSessionStorage<VersionedState<ConversationData>>({ namespace: "plugins-conversations" })

/** parse-mode 1.x's `parseMode("HTML")`, which 2.x no longer ships: HTML unless the call says otherwise. */
const htmlByDefault: Transformer = (prev, method, payload, signal) =>
  prev(
    method,
    (method.startsWith("send") || method.startsWith("edit")) && !("parse_mode" in payload) && !("entities" in payload)
      ? { ...payload, parse_mode: "HTML" }
      : payload,
    signal
  )

/** A three-step conversation: the replies and the answers are kept by the plugin in PostgreSQL. */
const order = async (conversation: Conversation<PluginContext, Context>, ctx: Context) => {
  await ctx.reply("What size?")
  const size = await conversation.waitFor("message:text")
  await size.reply("What colour?")
  const colour = await conversation.waitFor("message:text")
  await colour.reply(`Order: ${size.message.text} ${colour.message.text}`)
}

/** How often /retry's handler ran: once when the 429s are waited out inside it. */
let retryRuns = 0

/** A developer's bot, built anew for each start of the app as a new process would. */
const makeBot = () => {
  const bot = new Bot<PluginContext>(TEST_TOKEN)
  bot.api.config.use(autoRetry())
  bot.api.config.use(htmlByDefault)
  // hydrate's middleware is typed with its context flavour, which is no `Context` here (see HydratedMessage).
  bot.use((ctx, next) => hydrate()(ctx as never, next))
  bot.use(session({ initial: (): Settings => ({ sound: true }), storage: settingsStorage }))
  bot.use(conversations({ storage: conversationStorage }))
  bot.use(createConversation(order, "order"))
  bot.command("order", (ctx) => ctx.conversation.enter("order"))

  const settings = new Menu<PluginContext>("settings").text(
    (ctx) => `Sound: ${ctx.session.sound ? "on" : "off"}`,
    (ctx) => {
      ctx.session.sound = !ctx.session.sound
      ctx.menu.update()
    }
  )
  bot.use(settings)
  bot.command("settings", (ctx) => ctx.reply("Settings", { reply_markup: settings }))

  bot.command("work", async (ctx) => {
    const status = (await ctx.reply("⏳")) as HydratedMessage
    await status.editText("done")
  })
  bot.command("html", (ctx) => ctx.reply("<b>bold</b>"))
  bot.command("fmt", (ctx) => {
    const message = fmt`${bold}bold${bold} and plain`
    return ctx.reply(message.text, { entities: message.entities })
  })
  bot.command("retry", async (ctx) => {
    retryRuns += 1
    const sent = await ctx.reply("after the flood")
    await ctx.reply(`sent as ${sent.message_id}`)
  })
  bot.command(
    "ping",
    limit({
      timeFrame: 60_000,
      limit: 1,
      keyGenerator: (ctx) => ctx.from?.id.toString(),
      onLimitExceeded: (ctx) => ctx.reply("Slow down")
    }),
    (ctx) => ctx.reply("pong")
  )
  return bot
}

const startApp = (databaseUrl: string) =>
  Effect.gen(function*() {
    const app = yield* Layer.build(testAppLayer({ databaseUrl, env, handlers: [makeBot()] }))
    return { base: yield* Effect.provideContext(baseUrl, app), standIn: EffectContext.get(app, BotApiRecorder) }
  })

let lastId = 60_000
const nextId = () => ++lastId

const post = (base: string, update: Update) =>
  Effect.flatMap(postUpdate(base, update), (response) => Effect.sync(() => assert.strictEqual(response.status, 200, response.body)))

const sent = (calls: ReadonlyArray<RecordedCall>, chatId: number, method = "sendMessage") =>
  calls.filter((call) => call.method === method && Number(call.params["chat_id"]) === chatId)

const texts = (calls: ReadonlyArray<RecordedCall>, chatId: number) => sent(calls, chatId).map((call) => String(call.params["text"]))

/** Posts a text message and waits for its update to be done (its replies come before that). */
const say = (base: string, pg: Effect.Success<ReturnType<typeof pgProbe>>, chatId: number, text: string) =>
  Effect.gen(function*() {
    const updateId = nextId()
    yield* post(base, sampleUpdate({ updateId, chatId, text }))
    yield* eventually(`"${text}" done`, inboxRow(pg, updateId), (row) => row?.status === "done", { timeout: "20 seconds" })
  })

const callbackUpdate = (chatId: number, messageId: number, data: string): Update =>
  callbackQueryUpdate({ updateId: nextId(), chatId, messageId, data, messageText: "Settings" })

const setup = (label: string) =>
  Effect.gen(function*() {
    const databaseUrl = yield* Effect.promise(() => freshDatabase(label))
    return { databaseUrl, pg: yield* pgProbe(databaseUrl) }
  })

describe("grammY plugins in a developer's Bot", () => {
  it.live(
    "conversations: a conversation over three updates, kept in PostgreSQL, survives a restart of the app",
    () =>
      Effect.gen(function*() {
        const { databaseUrl, pg } = yield* setup("plugin_conversations")
        const chatId = 820_001
        const first = yield* Scope.make()
        const app = yield* startApp(databaseUrl).pipe(Scope.provide(first))
        yield* say(app.base, pg, chatId, "/order")
        yield* say(app.base, pg, chatId, "large")
        assert.deepStrictEqual(texts(yield* app.standIn.calls, chatId), ["What size?", "What colour?"])
        const stored = yield* pg.query(`SELECT key FROM sessions WHERE key = $1`, [`plugins-conversations:${chatId}`])
        assert.strictEqual(stored.length, 1, "the conversation's state is in the sessions table")

        yield* Scope.close(first, Exit.void)
        const second = yield* startApp(databaseUrl)
        yield* say(second.base, pg, chatId, "red")
        // The new instance resumed the conversation: it neither asked again nor replayed the old replies.
        assert.deepStrictEqual(texts(yield* second.standIn.calls, chatId), ["Order: large red"])
        yield* say(second.base, pg, chatId, "/order")
        assert.deepStrictEqual(texts(yield* second.standIn.calls, chatId), ["Order: large red", "What size?"])
      }),
    120_000
  )

  it.live("menu: a button press runs its handler and edits the menu message", () =>
    Effect.gen(function*() {
      const { databaseUrl, pg } = yield* setup("plugin_menu")
      const app = yield* startApp(databaseUrl)
      const chatId = 820_002
      yield* say(app.base, pg, chatId, "/settings")
      const menuMessage = sent(yield* app.standIn.calls, chatId)[0]!
      const keyboard = menuMessage.params["reply_markup"] as InlineKeyboardMarkup
      const button = keyboard.inline_keyboard[0]![0]!
      assert.strictEqual(button.text, "Sound: on")
      const messageId = (menuMessage.result as { message_id: number }).message_id

      const press = callbackUpdate(chatId, messageId, (button as { callback_data: string }).callback_data)
      yield* post(app.base, press)
      yield* eventually("the press done", inboxRow(pg, press.update_id), (row) => row?.status === "done", { timeout: "20 seconds" })
      const edits = sent(yield* app.standIn.calls, chatId, "editMessageReplyMarkup")
      assert.strictEqual(edits.length, 1)
      assert.strictEqual(edits[0]!.params["message_id"], messageId)
      const edited = edits[0]!.params["reply_markup"] as InlineKeyboardMarkup
      assert.strictEqual(edited.inline_keyboard[0]![0]!.text, "Sound: off")
      assert.isDefined(edits[0]!.result, "the stand-in accepted the edit of the message it issued")
      assert.deepStrictEqual(yield* pg.query(`SELECT value FROM sessions WHERE key = $1`, [`plugins-settings:${chatId}`]), [{
        value: { sound: false }
      }])
    }), 60_000)

  it.live("hydrate: the Message a reply resolves to can edit itself", () =>
    Effect.gen(function*() {
      const { databaseUrl, pg } = yield* setup("plugin_hydrate")
      const app = yield* startApp(databaseUrl)
      const chatId = 820_003
      yield* say(app.base, pg, chatId, "/work")
      const calls = yield* app.standIn.calls
      const status = sent(calls, chatId)[0]!
      const edits = sent(calls, chatId, "editMessageText")
      assert.deepStrictEqual(edits.map((call) => [call.params["message_id"], call.params["text"]]), [[
        (status.result as { message_id: number }).message_id,
        "done"
      ]])
      assert.isDefined(edits[0]!.result)
    }), 60_000)

  it.live(
    "parse-mode: a transformer installed once on bot.api applies to every update's calls; fmt's entities pass through",
    () =>
      Effect.gen(function*() {
        const { databaseUrl, pg } = yield* setup("plugin_parse_mode")
        const app = yield* startApp(databaseUrl)
        const chatId = 820_004
        yield* say(app.base, pg, chatId, "/html")
        yield* say(app.base, pg, chatId, "/html")
        yield* say(app.base, pg, chatId, "/fmt")
        const calls = sent(yield* app.standIn.calls, chatId)
        assert.deepStrictEqual(calls.map((call) => call.params["parse_mode"]), ["HTML", "HTML", undefined])
        assert.strictEqual(calls[2]!.params["text"], "bold and plain")
        assert.deepStrictEqual(calls[2]!.params["entities"], [{ type: "bold", offset: 0, length: 4 }])
      }),
    60_000
  )

  it.live(
    "auto-retry: a 429 inside the handler is waited out, short ones in place and longer ones by the plugin; the call succeeds",
    () =>
      Effect.gen(function*() {
        const { databaseUrl, pg } = yield* setup("plugin_auto_retry")
        const app = yield* startApp(databaseUrl)
        const chatId = 820_005
        const flood = (seconds: number) => ({
          status: 429,
          body: {
            ok: false,
            error_code: 429,
            description: `Too Many Requests: retry after ${seconds}`,
            parameters: { retry_after: seconds }
          }
        })
        // retry_after 1 is waited out by steadfast itself; 6 is past its in-place bound and left to auto-retry.
        yield* app.standIn.script("sendMessage", [flood(1), flood(6)])
        yield* say(app.base, pg, chatId, "/retry")
        const calls = sent(yield* app.standIn.calls, chatId)
        const delivered = calls[2]!.result as { message_id: number }
        assert.deepStrictEqual(calls.map((call) => call.params["text"]), [
          "after the flood",
          "after the flood",
          "after the flood",
          `sent as ${delivered.message_id}`
        ])
        assert.strictEqual(retryRuns, 1, "the handler ran once: it never saw the 429")
      }),
    60_000
  )

  it.live("ratelimiter: a second command within the time frame gets the limiter's answer instead", () =>
    Effect.gen(function*() {
      const { databaseUrl, pg } = yield* setup("plugin_ratelimiter")
      const app = yield* startApp(databaseUrl)
      const chatId = 820_006
      yield* say(app.base, pg, chatId, "/ping")
      yield* say(app.base, pg, chatId, "/ping")
      assert.deepStrictEqual(texts(yield* app.standIn.calls, chatId), ["pong", "Slow down"])
    }), 60_000)
})
