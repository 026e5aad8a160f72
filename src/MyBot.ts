// Your bot: the one module that lists what it does, in order. Each update goes to the first entry
// that takes it: an Effect handler whose `matches` is true, or grammY middleware (a Composer) that
// handles it instead of calling `next()`. Write a handler under src/bot/handlers/ and add it here;
// see "Write your first handler" in the README.
import { paymentHandlers } from "./payments/PaymentHandlers.ts"
import { Bot, type BotDefinition } from "./bot/Bot.ts"
import type { Handler } from "./bot/Handler.ts"
import { fallback, help, start } from "./bot/handlers/Basics.ts"

/** The commands, each with its /help line. */
export const commands: ReadonlyArray<Handler> = [
  start,
  ...paymentHandlers // the payments feature: delete this line and src/payments/ to remove it
]

export const myBot: BotDefinition = [...commands, help(commands), fallback]

export const MyBot = { layer: Bot.layerWith(myBot) }
