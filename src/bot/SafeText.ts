// Text that Telegram and PostgreSQL both accept. Telegram counts a message's length in UTF-16 code
// units (the unit of its entity offsets), so limits are measured in them, while cuts fall only on
// grapheme boundaries: a `slice` in the middle of a surrogate pair or an emoji sequence would send
// half a character, and a lone surrogate in a queued payload makes jsonb refuse the outbox row.

import { storableStringify } from "../db/Jsonb.ts"

/** Bot API length limits, in UTF-16 code units. */
export const LIMITS = {
  /** sendMessage / editMessageText `text` (after entities parsing). */
  messageText: 4096,
  /** `caption` of media messages. */
  caption: 1024,
  /** answerCallbackQuery `text`. */
  callbackAnswer: 200
} as const

const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" })

const ELLIPSIS = "…"

/**
 * `text` cut to at most `limit` UTF-16 code units on a grapheme boundary, ending in `…` when it
 * was cut. Never returns a string that splits a character.
 */
export const truncate = (text: string, limit: number): string => {
  if (text.length <= limit) return text
  const room = limit - ELLIPSIS.length
  let end = 0
  for (const { segment, index } of segmenter.segment(text)) {
    if (index + segment.length > room) break
    end = index + segment.length
  }
  return `${text.slice(0, end)}${ELLIPSIS}`
}

/** Fields whose length Telegram limits, by method (`caption` is limited wherever it appears). */
const textLimits: Record<string, Record<string, number> | undefined> = {
  sendMessage: { text: LIMITS.messageText },
  editMessageText: { text: LIMITS.messageText },
  answerCallbackQuery: { text: LIMITS.callbackAnswer }
}

/**
 * A payload ready to be queued: a plain JSON object (class instances such as grammY's
 * `InlineKeyboard` become their fields), every string well-formed, and the text fields within
 * Telegram's limits. Anything JSON cannot carry is dropped the way JSON.stringify drops it.
 */
export const safePayload = (method: string, payload: object): Record<string, unknown> => {
  const limits = textLimits[method]
  const json = storableStringify(payload)
  const plain = JSON.parse(json ?? "{}") as Record<string, unknown>
  for (const [field, limit] of Object.entries({ caption: LIMITS.caption, ...limits })) {
    const value = plain[field]
    if (typeof value === "string") plain[field] = truncate(value, limit)
  }
  return plain
}
