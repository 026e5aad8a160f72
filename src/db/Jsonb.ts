import type { SqlError } from "effect/sql/SqlError"

// JSON that PostgreSQL's jsonb refuses although JavaScript accepts it: the escape `\u0000`
// and escaped surrogates that do not form a pair. (Raw lone surrogates cannot arrive in a UTF-8
// body, but JSON.stringify escapes them, so they reach the database in this form too.)
const SUSPECT_ESCAPE =
  /\\u0000|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}/

// NUL, and a surrogate half with no partner next to it.
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is one of the characters jsonb refuses
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

const REPLACEMENT = "\uFFFD"

/** `text` with every character jsonb cannot hold replaced by U+FFFD. */
export const storableText = (text: string): string => text.replace(UNSTORABLE, REPLACEMENT)

const storableValue = (value: unknown): unknown => {
  if (typeof value === "string") return storableText(value)
  if (Array.isArray(value)) return value.map(storableValue)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [storableText(key), storableValue(inner)]))
  }
  return value
}

/**
 * JSON text that jsonb accepts, for text JSON.parse accepts: unchanged (and not re-parsed) in the
 * usual case, otherwise re-serialised with NUL and unpaired surrogates replaced by U+FFFD.
 */
export const storableJson = (json: string): string => SUSPECT_ESCAPE.test(json) ? JSON.stringify(storableValue(JSON.parse(json))) : json

/**
 * An update's JSON text made storable, and what a handler run from memory gets: exactly what is
 * stored (the value already parsed, unless the text had to change).
 */
export const storableUpdate = (text: string, parsed: unknown): { readonly json: string; readonly payload: unknown } => {
  const json = storableJson(text)
  return { json, payload: json === text ? parsed : JSON.parse(json) }
}

/** JSON.stringify of `value` (its `toJSON`s honoured) with every string made storable. */
export const storableStringify = (value: unknown): string | undefined =>
  JSON.stringify(value, (_key, inner: unknown) => typeof inner === "string" ? storableText(inner) : inner)

/**
 * True when PostgreSQL refused a statement because of the data it was given (SQLSTATE class 22,
 * data exception, or 54, program limit exceeded, e.g. JSON nested too deep): repeating it cannot
 * succeed, unlike a lost connection or a timeout.
 */
export const isDataError = (error: SqlError): boolean => {
  const code = field(error.reason.cause, "code")
  return code !== undefined && (code.startsWith("22") || code.startsWith("54"))
}

/** PostgreSQL's own words for why it refused a statement (never the statement or its parameters). */
export const refusalReason = (error: SqlError): string => field(error.reason.cause, "message") ?? error.message

const field = (value: unknown, key: string): string | undefined => {
  const inner = typeof value === "object" && value !== null && key in value ? (value as Record<string, unknown>)[key] : undefined
  return typeof inner === "string" ? inner : undefined
}
