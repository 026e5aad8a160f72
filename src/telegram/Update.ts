import { Option, Schema } from "effect"

/** Update kinds the Bot API documents; anything else is stored and skipped. */
export const UPDATE_KINDS = [
  "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
  "business_message", "edited_business_message", "deleted_business_messages", "message_reaction",
  "message_reaction_count", "inline_query", "chosen_inline_result", "callback_query", "shipping_query",
  "pre_checkout_query", "purchased_paid_media", "poll", "poll_answer", "my_chat_member", "chat_member",
  "chat_join_request", "chat_boost", "removed_chat_boost"
] as const

/** The kinds we ask Telegram to deliver (its default leaves out member and reaction updates). */
export const ALLOWED_UPDATES = [
  "message", "edited_message", "callback_query", "inline_query", "shipping_query", "pre_checkout_query", "my_chat_member"
] as const

export type UpdateKind = typeof UPDATE_KINDS[number]

export const User = Schema.Struct({
  id: Schema.Number,
  is_bot: Schema.optional(Schema.Boolean),
  first_name: Schema.optional(Schema.String),
  username: Schema.optional(Schema.String),
  language_code: Schema.optional(Schema.String)
})
export type User = typeof User.Type

export const Chat = Schema.Struct({ id: Schema.Number, type: Schema.String })

/** Service message content: a payment completed (for Stars, `currency` is `XTR`). */
export const SuccessfulPayment = Schema.Struct({
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String,
  telegram_payment_charge_id: Schema.String,
  // Required by the Bot API docs, but nothing here depends on it: a payment is never skipped for its lack.
  provider_payment_charge_id: Schema.optional(Schema.String),
  subscription_expiration_date: Schema.optional(Schema.Number),
  is_recurring: Schema.optional(Schema.Boolean),
  is_first_recurring: Schema.optional(Schema.Boolean)
})
export type SuccessfulPayment = typeof SuccessfulPayment.Type

/** Service message content: a payment was refunded (by the bot, or by Telegram on its own). */
export const RefundedPayment = Schema.Struct({
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String,
  telegram_payment_charge_id: Schema.String,
  provider_payment_charge_id: Schema.optional(Schema.String)
})
export type RefundedPayment = typeof RefundedPayment.Type

export const PreCheckoutQuery = Schema.Struct({
  id: Schema.String,
  from: User,
  currency: Schema.String,
  total_amount: Schema.Int,
  invoice_payload: Schema.String,
  shipping_option_id: Schema.optional(Schema.String)
})
export type PreCheckoutQuery = typeof PreCheckoutQuery.Type

export const Message = Schema.Struct({
  message_id: Schema.Number,
  date: Schema.optional(Schema.Number),
  chat: Chat,
  from: Schema.optional(User),
  text: Schema.optional(Schema.String),
  successful_payment: Schema.optional(SuccessfulPayment),
  refunded_payment: Schema.optional(RefundedPayment)
})
export type Message = typeof Message.Type

/** The part of an update the shipped handlers read; the full JSON stays in the inbox. */
export const Update = Schema.Struct({
  update_id: Schema.Int,
  message: Schema.optional(Message),
  edited_message: Schema.optional(Message),
  callback_query: Schema.optional(Schema.Struct({
    id: Schema.String,
    from: User,
    data: Schema.optional(Schema.String),
    message: Schema.optional(Schema.Struct({ message_id: Schema.optional(Schema.Number), chat: Chat }))
  })),
  pre_checkout_query: Schema.optional(PreCheckoutQuery),
  inline_query: Schema.optional(Schema.Struct({ id: Schema.String, from: User }))
})
export type Update = typeof Update.Type

/** What ingress needs to store an update: a JSON object with an integer update_id. */
export const UpdateEnvelope = Schema.fromJsonString(Schema.StructWithRest(
  Schema.Struct({ update_id: Schema.Int }),
  [Schema.Record(Schema.String, Schema.Unknown)]
))

export const kindOf = (body: Record<string, unknown>): UpdateKind | "unknown" =>
  UPDATE_KINDS.find((kind) => kind in body) ?? "unknown"

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
