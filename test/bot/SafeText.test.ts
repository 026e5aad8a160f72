import { assert, describe, it } from "@effect/vitest"
import { InlineKeyboard } from "grammy"
import { LIMITS, safePayload, truncate } from "../../src/bot/SafeText.ts"
import { storableText } from "../../src/db/Jsonb.ts"

const LONE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const graphemes = (text: string) => Array.from(new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text), (s) => s.segment)

describe("safe text", () => {
  it("truncate never splits a character, at every cut position, and stays within the limit", () => {
    const pieces = ["😀", "👨‍👩‍👧", "🇫🇷", "é", "a", "👍🏽"]
    for (const piece of pieces) {
      for (let limit = 1; limit <= 24; limit++) {
        for (let offset = 0; offset < 8; offset++) {
          const text = "x".repeat(offset) + piece.repeat(6)
          const cut = truncate(text, limit)
          assert.isAtMost(cut.length, Math.max(limit, 1), `${piece} limit ${limit} offset ${offset}`)
          assert.notMatch(cut, LONE)
          if (text.length <= limit) assert.strictEqual(cut, text)
          else {
            assert.isTrue(cut.endsWith("…"))
            const kept = cut.slice(0, -1)
            // What is kept is whole graphemes of the original, in order.
            assert.isTrue(text.startsWith(kept))
            assert.deepStrictEqual(graphemes(kept), graphemes(text).slice(0, graphemes(kept).length))
          }
        }
      }
    }
  })

  it("storableText replaces lone surrogates and NUL with U+FFFD and keeps pairs", () => {
    assert.strictEqual(storableText("a\uD83Db"), "a\uFFFDb")
    assert.strictEqual(storableText("a\uDE00b"), "a\uFFFDb")
    assert.strictEqual(storableText("a\u0000b"), "a\uFFFDb")
    assert.strictEqual(storableText("😀\uD83D"), "😀\uFFFD")
    assert.strictEqual(storableText("😀 ok"), "😀 ok")
  })

  it("safePayload gives a plain, storable payload with texts within Telegram's limits", () => {
    const payload = safePayload("sendMessage", {
      chat_id: 1,
      text: `${"😀".repeat(3000)}\u0000`,
      reply_markup: new InlineKeyboard().text("+1\uD83D", "x"),
      skipped: undefined
    })
    assert.deepStrictEqual(payload["reply_markup"], { inline_keyboard: [[{ text: "+1\uFFFD", callback_data: "x" }]] })
    assert.notProperty(payload, "skipped")
    const text = String(payload["text"])
    assert.isAtMost(text.length, LIMITS.messageText)
    assert.notMatch(text, LONE)
    assert.strictEqual(
      String(safePayload("sendPhoto", { chat_id: 1, photo: "id", caption: "é".repeat(2000) })["caption"]).length,
      LIMITS.caption
    )
    assert.strictEqual(
      String(safePayload("answerCallbackQuery", { callback_query_id: "q", text: "y".repeat(500) })["text"]).length,
      LIMITS.callbackAnswer
    )
    // JSON that PostgreSQL's jsonb accepts: no \u0000 and no lone surrogate escapes.
    assert.notMatch(JSON.stringify(payload), /\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])/i)
  })
})
