// grammY sessions in PostgreSQL through the real pipeline: each feature's session in its own
// namespace of the sessions table, and a size limit that fails the update with a clear error.
import { assert, describe, it } from "@effect/vitest"
import { Composer, session, type SessionFlavor } from "grammy"
import { Context, Effect, Layer } from "effect"
import type { SteadfastContext } from "../../src/bot/Grammy.ts"
import { sqlSessionStorage } from "../../src/bot/SessionStorage.ts"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { awaitStatus, freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"
import { eventually } from "../support/Eventually.ts"
import { postUpdate } from "../support/TestHttp.ts"

const MAX_ATTEMPTS = 2
const env = { MAX_ATTEMPTS: String(MAX_ATTEMPTS), SEND_RATE_PER_SECOND: "10000", SHUTDOWN_GRACE_MS: "200" }

interface Tally {
  count: number
}
interface Notes {
  notes: Array<string>
}

// Two features, each with its own session on the same chat key (grammY's default: the chat id).
const tallyStorage = sqlSessionStorage<Tally>({ namespace: "tally" })
const notesStorage = sqlSessionStorage<Notes>({ namespace: "notes", maxBytes: 1024 })

const tally = new Composer<SteadfastContext & SessionFlavor<Tally>>()
tally.use(session({ initial: () => ({ count: 0 }), storage: tallyStorage }))
tally.command("tally", (ctx) => {
  ctx.session.count += 1
  return ctx.reply(`Count: ${ctx.session.count}`)
})

const notes = new Composer<SteadfastContext & SessionFlavor<Notes>>()
notes.use(session({ initial: () => ({ notes: [] }), storage: notesStorage }))
notes.command("note", (ctx) => {
  ctx.session.notes.push(ctx.match)
  return ctx.reply(`Notes: ${ctx.session.notes.join(", ")}`)
})

let lastId = 70_000
const nextId = () => ++lastId

const setup = (label: string) =>
  Effect.gen(function*() {
    const databaseUrl = yield* Effect.promise(() => freshDatabase(label))
    const app = yield* Layer.build(testAppLayer({ databaseUrl, env, handlers: [tally, notes] }))
    return { base: yield* Effect.provideContext(baseUrl, app), standIn: Context.get(app, BotApiRecorder), pg: yield* pgProbe(databaseUrl) }
  })

describe("sqlSessionStorage", () => {
  it.live("two features with their own sessions on one chat never read each other's value", () =>
    Effect.gen(function*() {
      const { base, standIn, pg } = yield* setup("sessions_namespaces")
      const chatId = 830_001
      for (const text of ["/tally", "/note milk", "/tally", "/note eggs"]) {
        const updateId = nextId()
        yield* postUpdate(base, sampleUpdate({ updateId, chatId, text }))
        yield* eventually(`${text} done`, inboxRow(pg, updateId), (row) => row?.status === "done", { timeout: "20 seconds" })
      }
      const replies = (yield* standIn.calls).filter((call) => call.method === "sendMessage").map((call) => call.params["text"])
      assert.deepStrictEqual(replies, ["Count: 1", "Notes: milk", "Count: 2", "Notes: milk, eggs"])
      assert.deepStrictEqual(yield* pg.query(`SELECT key, value FROM sessions ORDER BY key`), [
        { key: `notes:${chatId}`, value: { notes: ["milk", "eggs"] } },
        { key: `tally:${chatId}`, value: { count: 2 } }
      ])
    }), 60_000)

  it.live(
    "a session over its size limit fails the update with an error naming its key and size, and is not stored",
    () =>
      Effect.gen(function*() {
        const { base, standIn, pg } = yield* setup("sessions_size")
        const chatId = 830_002
        const updateId = nextId()
        yield* postUpdate(base, sampleUpdate({ updateId, chatId, text: `/note ${"x".repeat(2000)}` }))
        const dead = yield* awaitStatus(pg, updateId, "dead", "60 seconds")
        assert.include(dead.last_error, `session "notes:${chatId}" is 2014 bytes of JSON, over the limit of 1024 bytes`)
        assert.deepStrictEqual(yield* pg.query(`SELECT key FROM sessions`), [])
        // The reply was made at once, before grammY wrote the session at the end of the middleware.
        const replies = (yield* standIn.calls).filter((call) => call.method === "sendMessage")
        assert.strictEqual(replies.length, 1, "the re-run got the recorded reply")
      }),
    60_000
  )

  it("a second storage on a namespace already in use is refused when it is made", () => {
    assert.throws(() => sqlSessionStorage({ namespace: "tally" }), /namespace "tally" is already used by another storage/)
  })
})
