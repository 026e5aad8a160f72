import { Effect } from "effect"
import { makeHandler } from "../Handler.ts"

// Last: any text no other handler claimed.
export default makeHandler({
  name: "fallback",
  order: 1000,
  matches: (update) => update.message?.text !== undefined,
  handle: Effect.fn("Handler.fallback")(function*({ update, reply }) {
    const text = update.message?.text ?? ""
    // A reply may hold 4096 characters; quote at most what fits.
    const quoted = text.length > 3900 ? `${text.slice(0, 3900)}…` : text
    yield* reply(`I don't understand “${quoted}”. Try /help`)
  })
})
