import { Schema } from "effect"

/**
 * A Bot API call an attempt of an update made: its number within the attempt, method, a digest of
 * its payload and Telegram's result. A re-run that makes the same call again gets this result back.
 */
export const RecordedCall = Schema.Struct({
  n: Schema.Number,
  method: Schema.String,
  digest: Schema.String,
  result: Schema.Unknown
})
export type RecordedCall = typeof RecordedCall.Type
