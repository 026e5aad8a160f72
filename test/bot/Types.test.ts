// Type-level guarantees of the Effect handler API: a mistake is a compile error (checked by
// `npm run typecheck`, which runs these files too), not a silent skip at run time.
import { describe, expectTypeOf, it } from "@effect/vitest"
import type { Message, Opts, Update, UserFromGetMe } from "grammy/types"
import { Bot, Composer } from "grammy"
import type { Effect } from "effect"
import type { BotDefinition } from "../../src/bot/Bot.ts"
import type { Handler, HandlerContext, ReplyExtras } from "../../src/bot/Handler.ts"
import type { BotApi } from "../../src/telegram/BotApi.ts"

declare const ctx: HandlerContext
declare const botApi: BotApi["Service"]

describe("typed handler API", () => {
  it("call takes the method's own parameters and answers with its result; an after-commit call gives nothing back", () => {
    expectTypeOf<typeof ctx.call<"sendMessage">>().parameter(1).toEqualTypeOf<Opts<"sendMessage">>()
    expectTypeOf<typeof ctx.call<"answerCallbackQuery">>().parameter(1).toEqualTypeOf<Opts<"answerCallbackQuery">>()
    expectTypeOf<Effect.Success<ReturnType<typeof ctx.call<"sendMessage">>>>().toEqualTypeOf<Message.TextMessage>()
    expectTypeOf<Effect.Success<ReturnType<HandlerContext["reply"]>>>().toEqualTypeOf<Message.TextMessage>()
    expectTypeOf<typeof ctx.afterCommit.call<"sendPhoto">>().parameter(2).toEqualTypeOf<string | undefined>()
    expectTypeOf<ReturnType<HandlerContext["afterCommit"]["call"]>>().toEqualTypeOf<Effect.Effect<void>>()
    const misuse = (context: HandlerContext) => [
      context.call("sendMessage", { chat_id: 1, text: "ok" }),
      // @ts-expect-error sendMessage needs text
      context.call("sendMessage", { chat_id: 1 }),
      // @ts-expect-error no such Bot API method
      context.call("sendTelepathy", { chat_id: 1 }),
      // @ts-expect-error show_alert is a boolean
      context.call("answerCallbackQuery", { callback_query_id: "q", show_alert: "yes" })
    ]
    expectTypeOf(misuse).returns.toBeArray()
  })

  it("reply takes sendMessage's extras; the update is grammY's whole Update", () => {
    expectTypeOf<HandlerContext["reply"]>().parameter(1).toEqualTypeOf<ReplyExtras | undefined>()
    expectTypeOf<ReplyExtras>().toEqualTypeOf<Omit<Opts<"sendMessage">, "chat_id" | "text">>()
    expectTypeOf<HandlerContext["update"]>().toEqualTypeOf<Update>()
    expectTypeOf<HandlerContext["me"]>().toEqualTypeOf<UserFromGetMe>()
    // @ts-expect-error parse_mode is one of Telegram's modes
    const bad: ReplyExtras = { parse_mode: "Markdown3" }
    expectTypeOf(bad).not.toBeNever()
  })

  it("a direct BotApi call is typed by method, result included", () => {
    expectTypeOf<Effect.Success<ReturnType<typeof botApi.call<"sendMessage">>>>().toEqualTypeOf<Message.TextMessage>()
    expectTypeOf<Effect.Success<ReturnType<typeof botApi.call<"getMe">>>>().toEqualTypeOf<UserFromGetMe>()
  })

  it("a bot lists Effect handlers, Composers and grammY Bots; anything else is a type error", () => {
    const handler: Handler = { name: "x", matches: () => true, handle: ({ reply }) => reply("hi") }
    const bot: BotDefinition = [handler, new Composer(), new Bot("123:abc")]
    expectTypeOf(bot).toExtend<ReadonlyArray<unknown>>()
    // @ts-expect-error a handler without `handle` (or a typo in a name) is not an entry
    const broken: BotDefinition = [{ name: "x", matches: () => true, hadnle: () => undefined }]
    expectTypeOf(broken).not.toBeNever()
  })
})
