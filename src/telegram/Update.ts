import { Option, Result, Schema } from "effect"

/** Update kinds the Bot API documents; anything else is stored and skipped. */
export const UPDATE_KINDS = [
  "message",
  "edited_message",
  "channel_post",
  "edited_channel_post",
  "business_connection",
  "business_message",
  "edited_business_message",
  "deleted_business_messages",
  "message_reaction",
  "message_reaction_count",
  "inline_query",
  "chosen_inline_result",
  "callback_query",
  "shipping_query",
  "pre_checkout_query",
  "purchased_paid_media",
  "poll",
  "poll_answer",
  "my_chat_member",
  "chat_member",
  "chat_join_request",
  "chat_boost",
  "removed_chat_boost"
] as const

/** The kinds we ask Telegram to deliver (its default leaves out member and reaction updates). */
export const ALLOWED_UPDATES = [
  "message",
  "edited_message",
  "callback_query",
  "inline_query",
  "shipping_query",
  "pre_checkout_query",
  "my_chat_member"
] as const

export type UpdateKind = typeof UPDATE_KINDS[number]

const User = Schema.Struct({ id: Schema.Number })
const Chat = Schema.Struct({ id: Schema.Number, type: Schema.String })

/** Service message content: a payment completed (for Stars, `currency` is `XTR`). */
export const SuccessfulPayment = Schema.Struct({
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String,
  telegram_payment_charge_id: Schema.String,
  // Required by the Bot API docs, but nothing here depends on it: a payment is never refused for its lack.
  provider_payment_charge_id: Schema.optional(Schema.String)
})
export type SuccessfulPayment = typeof SuccessfulPayment.Type

/** Service message content: a payment was refunded (by the bot, or by Telegram on its own). */
export const RefundedPayment = Schema.Struct({
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String,
  telegram_payment_charge_id: Schema.String
})
export type RefundedPayment = typeof RefundedPayment.Type

export const PreCheckoutQuery = Schema.Struct({
  id: Schema.String,
  from: User,
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String
})
export type PreCheckoutQuery = typeof PreCheckoutQuery.Type

/** A message-like update must say which chat it belongs to: its chat is the ordering key and the reply target. */
const ChatBound = Schema.Struct({ message_id: Schema.Number, chat: Chat })
/** A query must name its sender: the answer goes to them and they are the ordering key. */
const FromUser = Schema.Struct({ from: User })

/**
 * What the pipeline needs of each known kind, and nothing more: handlers get the update exactly
 * as Telegram sent it (typed as grammY's `Update`), never a copy stripped to these fields.
 */
const requirements: Partial<Record<UpdateKind, Schema.Decoder<unknown>>> = {
  message: ChatBound,
  edited_message: ChatBound,
  channel_post: ChatBound,
  edited_channel_post: ChatBound,
  business_message: ChatBound,
  edited_business_message: ChatBound,
  callback_query: Schema.Struct({ id: Schema.String, from: User }),
  inline_query: Schema.Struct({ id: Schema.String, from: User }),
  chosen_inline_result: FromUser,
  shipping_query: Schema.Struct({ id: Schema.String, from: User }),
  pre_checkout_query: Schema.Struct({ id: Schema.String, from: User }),
  my_chat_member: Schema.Struct({ chat: Chat, from: User }),
  chat_member: Schema.Struct({ chat: Chat, from: User }),
  chat_join_request: Schema.Struct({ chat: Chat, from: User })
}

const AnyObject = Schema.Record(Schema.String, Schema.Unknown)
const checkers = new Map(UPDATE_KINDS.map((kind) => [
  kind,
  Schema.decodeUnknownResult(Schema.Struct({ update_id: Schema.Int, [kind]: requirements[kind] ?? AnyObject }))
]))

/**
 * Checks an update of a known kind against what the pipeline needs; the reason when it falls
 * short. The update itself is never rewritten: on success the caller keeps the original object.
 */
export const invalidReason = (kind: UpdateKind, payload: unknown): string | undefined => {
  const check = checkers.get(kind)
  if (check === undefined) return undefined
  const result = check(payload)
  return Result.isSuccess(result)
    ? undefined
    : `a ${kind} update without what the pipeline needs: ${result.failure.message.replace(/\s+/g, " ")}`
}

export const isUpdateKind = (kind: string): kind is UpdateKind => (UPDATE_KINDS as ReadonlyArray<string>).includes(kind)

/** What ingress needs to store an update: a JSON object with a positive integer update_id (Telegram's start at 1). */
export const UpdateEnvelope = Schema.fromJsonString(Schema.StructWithRest(
  Schema.Struct({ update_id: Schema.Int.check(Schema.isGreaterThan(0)) }),
  [Schema.Record(Schema.String, Schema.Unknown)]
))

export const kindOf = (body: Record<string, unknown>): UpdateKind | "unknown" => UPDATE_KINDS.find((kind) => kind in body) ?? "unknown"

const idOf = (value: unknown, path: ReadonlyArray<string>): Option.Option<string> => {
  let current = value
  for (const key of path) {
    if (typeof current !== "object" || current === null) return Option.none()
    current = (current as Record<string, unknown>)[key]
  }
  return typeof current === "number" || typeof current === "string" ? Option.some(String(current)) : Option.none()
}

/**
 * The ordering key of an update: its chat for chat-bound kinds, its user for queries.
 * Updates without either get a key of their own and run without ordering constraints.
 */
export const chatKeyOf = (body: unknown, kind: string): string => {
  const inner = typeof body === "object" && body !== null ? (body as Record<string, unknown>)[kind] : undefined
  return Option.match(
    Option.orElse(
      Option.map(Option.orElse(idOf(inner, ["chat", "id"]), () => idOf(inner, ["message", "chat", "id"])), (id) => `chat:${id}`),
      () => Option.map(Option.orElse(idOf(inner, ["from", "id"]), () => idOf(inner, ["user", "id"])), (id) => `user:${id}`)
    ),
    { onNone: () => `update:${Option.getOrElse(idOf(body, ["update_id"]), () => "?")}`, onSome: (key) => key }
  )
}
