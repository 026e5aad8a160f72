// The payments feature's handlers, in Effect style: Telegram Stars invoices, pre-checkout,
// crediting, balance, refunds and the support commands Telegram requires of payment bots.
// To remove the feature, delete src/payments/ and its line in src/MyBot.ts.
import type { Update } from "grammy/types"
import { Effect, Option, Schema } from "effect"
import {
  commandArgument,
  type Handler,
  type HandlerContext,
  type HandlerError,
  type HandlerServices,
  InvalidUpdate,
  isCommand,
  makeHandler
} from "../bot/Handler.ts"
import { truncate } from "../bot/SafeText.ts"
import { BotApi } from "../telegram/BotApi.ts"
import { PreCheckoutQuery, RefundedPayment, SuccessfulPayment } from "../telegram/Update.ts"
import { BUY_CALLBACK_PREFIX, describeProduct, findProduct, PRODUCTS, type Product } from "./Catalogue.ts"
import { balanceOf, checkPreCheckout, createOrder, recentPayments, recordRefund, recordSuccessfulPayment, refund } from "./Payments.ts"

export const TERMS_TEXT = [
  "Terms of purchase",
  "• Credits are sold for Telegram Stars through Telegram; prices are shown on each invoice.",
  "• An invoice is valid for 30 minutes. Credits are added as soon as Telegram confirms the payment.",
  "• You can get the Stars back for a payment with /refund as long as its credits are unused.",
  "• If a payment was taken but no credits were added, it is kept on record: send /paysupport.",
  "• Credits have no cash value outside this bot."
].join("\n")

export const PRIVATE_ONLY = "Send this to me in a private chat: I only talk about payments there."

/** A charge id quoted back to the user: ours are short, a user's argument may be anything. */
const quoteChargeId = (chargeId: string) => truncate(chargeId, 128)

/**
 * A payment command that reveals the sender's money (balance, charges, refunds): answered only in
 * a private chat, so nothing about a user's payments is ever posted to a group.
 */
const privateCommand = (
  name: string,
  help: string,
  handle: (context: HandlerContext, userId: bigint) => Effect.Effect<void, HandlerError, HandlerServices>
): Handler =>
  makeHandler({
    name,
    help,
    matches: isCommand(name),
    handle: (context) => {
      const message = context.update.message
      return message?.chat.type !== "private" || message.from === undefined
        ? context.reply(PRIVATE_ONLY)
        : handle(context, BigInt(message.from.id))
    }
  })

/** The catalogue as an inline keyboard, one product per row. */
export const productKeyboard = {
  inline_keyboard: PRODUCTS.map((product) => [{ text: describeProduct(product), callback_data: `${BUY_CALLBACK_PREFIX}${product.id}` }])
}

/**
 * Creates the order and queues its invoice to the chat, sent after commit: an invoice whose order
 * was rolled back would take money for nothing.
 */
const issueInvoice = (
  { afterCommit, update }: HandlerContext,
  order: { readonly userId: bigint; readonly chatId: bigint; readonly product: Product }
) =>
  Effect.gen(function*() {
    const issued = yield* createOrder({ ...order, updateId: update.update_id })
    yield* afterCommit.call("sendInvoice", { ...issued.invoice, chat_id: Number(order.chatId) }, `chat:${order.chatId}`)
  })

/** Decodes a service message's payment content, or fails the update as invalid: a payment is never skipped. */
const paymentContent = <A>(schema: Schema.Decoder<A>, value: unknown, update: Update, what: string) =>
  Schema.decodeUnknownEffect(schema)(value).pipe(
    Effect.mapError((error) =>
      new InvalidUpdate({
        reason: `update ${update.update_id}: ${what} the payments handler cannot use: ${error.message.replace(/\s+/g, " ")}`
      })
    )
  )

// `/buy credits_100` sends the invoice at once; `/buy` alone offers the catalogue as buttons.
const buy = makeHandler({
  name: "buy",
  help: "/buy - buy credits with Telegram Stars",
  matches: isCommand("buy"),
  handle: Effect.fn("Handler.buy")(function*(context) {
    const { update, reply } = context
    const message = update.message
    if (message?.from === undefined) return yield* reply("Payments work in a private chat with me: send /buy there.")
    const argument = commandArgument(update)
    if (argument === "") return yield* reply("What would you like to buy?", { reply_markup: productKeyboard })
    const product = findProduct(argument)
    if (product === undefined) {
      return yield* reply(`I don't sell “${truncate(argument, 64)}”. Choose one of these:`, { reply_markup: productKeyboard })
    }
    yield* issueInvoice(context, { userId: BigInt(message.from.id), chatId: BigInt(message.chat.id), product })
  })
})

// A tap on a /buy button: stop the button's spinner, then send the invoice for that product.
const buyCallback = makeHandler({
  name: "buy-callback",
  matches: (update) => update.callback_query?.data?.startsWith(BUY_CALLBACK_PREFIX) === true,
  handle: Effect.fn("Handler.buyCallback")(function*(context) {
    const query = context.update.callback_query
    if (query === undefined) return
    const product = findProduct((query.data ?? "").slice(BUY_CALLBACK_PREFIX.length))
    const chat = query.message?.chat
    const notice = product === undefined
      ? "This product is no longer available. Send /buy to see what is."
      : chat === undefined
      ? "Open a private chat with me and send /buy there."
      : undefined
    yield* context.call("answerCallbackQuery", {
      callback_query_id: query.id,
      ...(notice === undefined ? {} : { text: notice, show_alert: true })
    })
    if (product === undefined || chat === undefined) return
    yield* issueInvoice(context, { userId: BigInt(query.from.id), chatId: BigInt(chat.id), product })
  })
})

/**
 * Telegram cancels the payment unless this is answered within 10 s of the user's tap, so the
 * answer is made at once, never after commit behind the chat's other messages (and the inbox
 * claims these updates first). A re-run after a failed commit gets the recorded answer back
 * instead of answering the same query again.
 */
const preCheckout = makeHandler({
  name: "pre-checkout",
  matches: (update) => update.pre_checkout_query !== undefined,
  handle: Effect.fn("Handler.preCheckout")(function*({ update }) {
    const query = yield* paymentContent(PreCheckoutQuery, update.pre_checkout_query, update, "a pre_checkout_query")
    const botApi = yield* BotApi
    const verdict = yield* checkPreCheckout(query)
    yield* Effect.annotateCurrentSpan({ "steadfast.pre_checkout": verdict.ok ? "ok" : verdict.reason })
    if (!verdict.ok) {
      yield* Effect.logInfo(`pre-checkout ${query.id} of user ${query.from.id} declined: ${verdict.reason}`)
    }
    yield* botApi.call(
      "answerPreCheckoutQuery",
      verdict.ok
        ? { pre_checkout_query_id: query.id, ok: true }
        : { pre_checkout_query_id: query.id, ok: false, error_message: verdict.message }
    ).pipe(
      Effect.catchTags({
        BotApiRejected: (error) => Effect.logWarning(`pre-checkout ${query.id} could not be answered: ${error.message}`),
        ChatBlocked: (error) => Effect.logWarning(`pre-checkout ${query.id} could not be answered: ${error.message}`)
      })
    )
  })
})

// The money has been taken when this arrives: record it (exactly once), credit it when it
// matches its order, and send the receipt after commit: it states a credit that must have
// happened, and one that cannot be delivered (the user blocked the bot) fails on its own.
const successfulPayment = makeHandler({
  name: "successful-payment",
  matches: (update) => update.message?.successful_payment !== undefined,
  handle: Effect.fn("Handler.successfulPayment")(function*({ afterCommit: { reply }, update }) {
    const message = update.message
    if (message === undefined) return
    const payment = yield* paymentContent(SuccessfulPayment, message.successful_payment, update, "a successful_payment")
    const outcome = yield* recordSuccessfulPayment({
      userId: BigInt(message.from?.id ?? message.chat.id),
      chatId: BigInt(message.chat.id),
      updateId: update.update_id,
      paidAt: message.date,
      payment
    })
    const charge = payment.telegram_payment_charge_id
    switch (outcome._tag) {
      case "Credited":
        return yield* reply([
          `Thank you! Payment of ${payment.total_amount} ⭐ received: ${outcome.credits} credits added.`,
          `Your balance: ${outcome.balance} credits.`,
          `Receipt: order #${outcome.orderId}, charge ${charge}. Send /refund to get your Stars back.`
        ].join("\n"))
      case "Flagged":
        return yield* reply([
          `We received your payment of ${payment.total_amount} ⭐, but it does not match an open order, so no credits were added.`,
          `It is recorded under charge ${charge} and our support will sort it out; send /paysupport,`,
          `or /refund ${charge} to get your Stars back.`
        ].join("\n"))
      case "Duplicate":
        return yield* Effect.logInfo(`payment ${charge} delivered again (update ${update.update_id}); already ${outcome.status}`)
    }
  })
})

// Telegram reports every refund, ours included. Ours is already recorded (a no-op here); one
// made without us (by Telegram's support) is recorded now so the balance matches the money.
const refundedPayment = makeHandler({
  name: "refunded-payment",
  matches: (update) => update.message?.refunded_payment !== undefined,
  handle: Effect.fn("Handler.refundedPayment")(function*({ afterCommit: { reply }, update }) {
    const refunded = yield* paymentContent(RefundedPayment, update.message?.refunded_payment, update, "a refunded_payment")
    // Only the payer's own refund: Telegram sends it in the payer's chat, from the payer.
    const payer = update.message?.from?.id
    if (payer === undefined) {
      return yield* Effect.logWarning(`refunded_payment ${refunded.telegram_payment_charge_id} without a sender; ignored`)
    }
    const balance = yield* recordRefund(refunded.telegram_payment_charge_id, BigInt(payer))
    if (Option.isNone(balance)) return
    yield* Effect.logWarning(`payment ${refunded.telegram_payment_charge_id} was refunded outside the bot; recorded`)
    yield* reply(`Your payment ${refunded.telegram_payment_charge_id} was refunded. Your balance: ${balance.value} credits.`)
  })
})

const balance = privateCommand("balance", "/balance - your credits", (context, userId) =>
  Effect.gen(function*() {
    const credits = yield* balanceOf(userId)
    yield* context.reply(`Your balance: ${credits} credits.${credits === 0n ? " Send /buy to get some." : ""}`)
  }).pipe(Effect.withSpan("Handler.balance")))

// `/refund` (the last refundable payment) or `/refund <charge id>`. Telegram refunds first, by a
// call made at once; the refund is recorded only if it succeeded (see Payments.refund), and the
// answer, which states what was recorded, goes after commit.
const refundCommand = privateCommand(
  "refund",
  "/refund - get the Stars of your last payment back",
  ({ afterCommit: { reply }, update }, userId) =>
    Effect.gen(function*() {
      const argument = commandArgument(update)
      // Telegram unreachable (BotApiUnavailable): rolled back and retried; nothing was recorded.
      const outcome = yield* refund(userId, argument === "" ? undefined : argument)
      switch (outcome._tag) {
        case "Refunded": {
          const { payment } = outcome
          return yield* reply([
            `Refunded ${payment.total_amount} ⭐ (charge ${payment.telegram_payment_charge_id}).`,
            payment.credits > 0
              ? `${payment.credits} credits were removed. Your balance: ${outcome.balance} credits.`
              : `Your balance: ${outcome.balance} credits.`
          ].join("\n"))
        }
        case "NothingToRefund":
          return yield* reply("You have no payment that can be refunded.")
        case "NotFound":
          return yield* reply(`I found no payment of yours with charge id ${quoteChargeId(outcome.chargeId)}.`)
        case "AlreadyRefunded":
          return yield* reply(`The payment ${quoteChargeId(outcome.chargeId)} has already been refunded.`)
        case "CreditsUsed":
          return yield* reply(
            `This payment added ${outcome.payment.credits} credits but your balance is ${outcome.balance}: ` +
              "credits already used cannot be refunded. Send /paysupport if you need help."
          )
        case "Refused":
          return yield* reply(
            `Telegram did not refund this payment (${outcome.description}). Nothing was changed; send /paysupport if you need help.`
          )
      }
    }).pipe(Effect.withSpan("Handler.refund"))
)

const STATUS_TEXT: Record<string, string> = {
  credited: "credited",
  needs_support: "waiting for support",
  refunded: "refunded"
}

// Telegram requires payment bots to answer /paysupport. The user's recent charge ids are what
// support needs, so they are listed here.
const paysupport = privateCommand("paysupport", "/paysupport - help with a payment", ({ reply }, userId) =>
  Effect.gen(function*() {
    const payments = yield* recentPayments(userId, 5)
    const lines = [
      "Payment support: reply here describing the problem and include the charge id; a person will answer.",
      "You can get your Stars back for a payment with /refund (your last one) or /refund <charge id>."
    ]
    if (payments.length > 0) {
      lines.push("", "Your recent payments:")
      for (const payment of payments) {
        lines.push(
          `• ${payment.total_amount} ⭐ ${payment.product ?? "(no order)"}: ${
            STATUS_TEXT[payment.status] ?? payment.status
          }, charge ${payment.telegram_payment_charge_id}`
        )
      }
    }
    yield* reply(lines.join("\n"))
  }).pipe(Effect.withSpan("Handler.paysupport")))

// Telegram requires payment bots to answer /terms.
const terms = makeHandler({
  name: "terms",
  help: "/terms - terms of purchase",
  matches: isCommand("terms"),
  handle: ({ reply }) => reply(TERMS_TEXT)
})

/** The payments feature, in the order its handlers are tried: payment service messages first. */
export const paymentHandlers: ReadonlyArray<Handler> = [
  preCheckout,
  successfulPayment,
  refundedPayment,
  buy,
  buyCallback,
  balance,
  refundCommand,
  paysupport,
  terms
]
