// Hostile input through the real pipeline: commands addressed to other bots, payment commands in
// groups, updates without what the pipeline needs, and texts that would split a character or
// that PostgreSQL's jsonb would refuse.
import { assert, describe, layer } from "@effect/vitest"
import type { Update } from "grammy/types"
import { Effect, Schedule, Schema } from "effect"
import { fallbackReply } from "../../src/bot/handlers/Basics.ts"
import { makeHandler, isCommand } from "../../src/bot/Handler.ts"
import { myBot } from "../../src/MyBot.ts"
import { PRIVATE_ONLY } from "../../src/payments/PaymentHandlers.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import {
  commandUpdate,
  inboxState,
  messagesTo,
  moneyOf,
  newShopper,
  nextUpdateId,
  paymentAppLayer,
  buyAndPay
} from "../payments/PaymentSupport.ts"
import { eventually } from "../support/Eventually.ts"
import { baseUrl } from "../support/TestApp.ts"
import { postUpdate } from "../support/TestHttp.ts"
import { AppDatabase } from "../support/TestDatabase.ts"

const LONE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

// A handler that builds its reply carelessly: a UTF-16 slice that splits an emoji, and a NUL.
const careless = makeHandler({
  name: "careless",
  matches: isCommand("careless"),
  handle: ({ reply }) => reply(`half ${"😀".slice(0, 1)} and nul \u0000 end`)
})

const groupUpdate = (userId: number, groupId: number, text: string): Update => ({
  update_id: nextUpdateId(),
  message: {
    message_id: 1,
    date: Math.floor(Date.now() / 1000),
    from: { id: userId, is_bot: false, first_name: "Grace" },
    chat: { id: groupId, type: "supergroup", title: "A group" },
    text,
    entities: [{ type: "bot_command", offset: 0, length: text.split(" ")[0]!.length }]
  }
})

const post = (update: unknown) =>
  Effect.gen(function*() {
    const response = yield* postUpdate(yield* baseUrl, update)
    assert.strictEqual(response.status, 200, response.body)
  })

const awaitDead = (updateId: number) =>
  eventually(`update ${updateId} dead`, inboxState(updateId), (row) => row?.status === "dead", { timeout: "60 seconds" })

describe("hostile input", () => {
  layer(paymentAppLayer("hostile_input", { env: { MAX_ATTEMPTS: "2" }, handlers: [careless, ...myBot] }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })((it) => {
    it.effect("commands addressed to another bot are not answered; ours are, whatever the case of our username", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const ignored = ["/balance@other_bot", "/refund@other_bot", "/help@other_bot", "/paysupport@other_bot x"]
        const ids = ignored.map(() => nextUpdateId())
        for (const [i, text] of ignored.entries()) yield* shopper.post(commandUpdate(shopper.userId, text, ids[i]))
        // Answered after the ignored ones (one chat, in order): when its reply is there, they are finished.
        assert.strictEqual(yield* shopper.say("/balance@Steadfast_Sandbox_Bot"), "Your balance: 0 credits. Send /buy to get some.")
        assert.deepStrictEqual(messagesTo(yield* standIn.calls, shopper.userId), ["Your balance: 0 credits. Send /buy to get some."])
        for (const id of ids) assert.strictEqual((yield* inboxState(id))?.status, "skipped")
        assert.isFalse((yield* standIn.calls).some((call) => call.method === "refundStarPayment"))
      }))

    it.effect("payment commands in a group answer “send this to me in a private chat” and reveal nothing", () =>
      Effect.gen(function*() {
        const standIn = yield* BotApiRecorder
        const shopper = yield* newShopper
        const { chargeId } = yield* buyAndPay(shopper, "credits_100")

        const groupId = -1_000_000_000_000 - shopper.userId % 1_000_000
        for (const text of ["/balance", "/paysupport", "/refund", `/refund ${chargeId}`]) {
          yield* post(groupUpdate(shopper.userId, groupId, text))
        }
        const calls = yield* standIn.awaitCalls((calls) => messagesTo(calls, groupId).length === 4, "20 seconds")
        assert.deepStrictEqual(messagesTo(calls, groupId), [PRIVATE_ONLY, PRIVATE_ONLY, PRIVATE_ONLY, PRIVATE_ONLY])
        assert.isFalse(calls.some((call) => call.method === "refundStarPayment"))
        assert.deepStrictEqual(yield* moneyOf(shopper.userId), { balance: 100, ledger_sum: 100, ledger_entries: 1, payments: 1 })
      }))

    it.effect("an update of a known kind without what the pipeline needs is dead-lettered as invalid, never skipped", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        const noChat = nextUpdateId()
        yield* post({
          update_id: noChat,
          message: { message_id: 1, date: 1767225600, from: { id: shopper.userId, is_bot: false, first_name: "G" }, text: "hi" }
        })
        const badPayment = nextUpdateId()
        const payment = sampleUpdate({ updateId: badPayment, chatId: shopper.userId, text: "" })
        yield* post({
          ...payment,
          message: {
            ...payment.message,
            text: undefined,
            successful_payment: { currency: "XTR", total_amount: "lots", invoice_payload: "x" }
          }
        })
        for (const id of [noChat, badPayment]) {
          const row = yield* awaitDead(id)
          assert.include(row?.last_error, "InvalidUpdate")
        }
        assert.include((yield* inboxState(noChat))?.last_error, "chat")
        assert.include((yield* inboxState(badPayment))?.last_error, "successful_payment")
      }))

    it.effect("long texts with an emoji at every cut position are answered, cut on a character boundary", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        // Where the fallback cuts the quote: its reply must fit 4096 UTF-16 code units.
        const room = 4096 - fallbackReply("").length - 1
        const texts = ["😀", "👨‍👩‍👧", "🇫🇷"].flatMap((emoji) =>
          Array.from({ length: emoji.length + 2 }, (_, k) => `${"a".repeat(room - k)}${emoji}${"b".repeat(50)}`)
        )
        for (const text of texts) yield* shopper.post(commandUpdate(shopper.userId, text))
        const replies = yield* shopper.awaitMessages(texts.length, "60 seconds")
        assert.lengthOf(replies, texts.length)
        for (const [i, reply] of replies.entries()) {
          assert.isAtMost(reply.length, 4096)
          assert.notMatch(reply, LONE, `reply ${i}`)
          assert.strictEqual(reply, fallbackReply(texts[i]!))
          const quoted = reply.slice(fallbackReply("").indexOf("”"), -"…”. Try /help".length)
          assert.isTrue(texts[i]!.startsWith(quoted), `reply ${i} quotes a prefix of the text`)
        }
      }))

    it.effect("a reply with a lone surrogate or NUL is sent as plain grammY sends it (JSON escapes both); the update is done", () =>
      Effect.gen(function*() {
        const shopper = yield* newShopper
        assert.strictEqual(yield* shopper.say("/careless"), `half ${"😀".slice(0, 1)} and nul \u0000 end`)
        const db = yield* AppDatabase
        // The reply is made while the update runs; its done mark follows.
        const rows = yield* db.rows(Schema.Struct({ status: Schema.String }), "SELECT status FROM inbox WHERE chat_key = $1", [
          `chat:${shopper.userId}`
        ]).pipe(Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (rows) => rows[0]?.status !== "processing", times: 250 }))
        assert.deepStrictEqual(rows, [{ status: "done" }])
      }))
  })
})
