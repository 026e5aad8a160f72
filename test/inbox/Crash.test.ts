import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Ref } from "effect"
import pg from "pg"
import { BotApiStandIn } from "../../src/sandbox/BotApiStandIn.ts"
import { pgProbe, waitFor } from "../support/PgProbe.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase } from "../support/TestDatabase.ts"
import { answeredCount, interleavedPlan, makePostStats, postPlan, repliesByChat, withoutImmediateRepeats } from "../support/Load.ts"

const CHATS = 30
const PER_CHAT = 10
const TOTAL = CHATS * PER_CHAT
/** Chats whose 6th update is `/start`: its handler blocks on the users row the test holds. */
const BLOCKED_CHATS = [0, 1, 2]
const FIRST_CHAT_ID = 900_000

describe("kill -9 and restart", () => {
  it.live(
    "after SIGKILL mid-processing (handlers in their transactions, replies committed and in flight), a new process on the same database answers every update, each processed exactly once, in per-chat order",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiStandIn.layer()), BotApiStandIn)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("crash"))
        const first = yield* spawnService(testEnv(databaseUrl, standIn.url, { UPDATE_TIMEOUT_MS: "5000", SEND_RATE_PER_SECOND: "10000" }))
        const probe = yield* pgProbe(databaseUrl)

        // Holding uncommitted users rows makes `/start` for these users wait inside its
        // transaction: those updates are certainly mid-processing when the process dies.
        const blocker = new pg.Client({ connectionString: databaseUrl, application_name: "steadfast-test-blocker" })
        blocker.on("error", () => undefined)
        yield* Effect.acquireRelease(Effect.promise(() => blocker.connect()), () =>
          Effect.promise(() => blocker.end().catch(() => undefined)))
        const blockedUsers = BLOCKED_CHATS.map((i) =>
          FIRST_CHAT_ID + i
        )
        yield* Effect.promise(() => blocker.query("BEGIN"))
        yield* Effect.promise(() => blocker.query(`INSERT INTO users (telegram_id) SELECT unnest($1::bigint[])`, [blockedUsers]))

        const plan = interleavedPlan({
          chats: CHATS,
          perChat: PER_CHAT,
          firstUpdateId: 40_000,
          firstChatId: FIRST_CHAT_ID,
          seed: 99,
          text: (updateId, chatIndex, indexInChat) => (BLOCKED_CHATS.includes(chatIndex) && indexInChat === 5 ? "/start" : `u${updateId}`)
        })
        const startIds = plan.flatMap((chat) => chat.filter((planned) => planned.text === "/start").map((planned) => planned.updateId))
        // Slow answers keep Bot API calls in flight, so deliveries are cut off by the kill too; the
        // first reply is not answered at all before the kill: committed, sent, never confirmed.
        yield* standIn.setDelay(30)
        yield* standIn.script("sendMessage", [{ status: 200, body: { ok: true, result: true }, delayMs: 60_000 }])

        const base = yield* Ref.make(first.baseUrl)
        const stats = makePostStats()
        yield* postPlan(Ref.get(base), plan, stats)

        yield* waitFor(
          "a blocked /start update in processing and some replies delivered",
          Effect.all([
            probe.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM inbox WHERE status = 'processing' AND update_id = ANY($1::bigint[])`,
              [startIds]
            ),
            standIn.calls
          ]),
          ([rows, calls]) => (rows[0]?.n ?? 0) >= 1 && answeredCount(plan, calls) >= 50,
          { timeout: "30 seconds", interval: "20 millis" }
        )
        yield* first.kill("SIGKILL")
        const exit = yield* first.exited
        assert.strictEqual(exit.signal, "SIGKILL")
        const answeredBeforeKill = answeredCount(plan, yield* standIn.calls)
        assert.isBelow(answeredBeforeKill, TOTAL, "the process died with work left")

        // Let the users rows go: the dead process's waiting statements finish on the server,
        // find their client gone and roll back. Wait until none of its sessions remain.
        yield* Effect.promise(() => blocker.query("ROLLBACK"))
        yield* waitFor("the killed process's sessions to end", probe.appSessions, (sessions) => sessions.length === 0, {
          timeout: "20 seconds"
        })

        const leftOver = yield* probe.query<{ update_id: string; locked_until: Date }>(
          `SELECT update_id, locked_until FROM inbox WHERE status = 'processing'`
        )
        assert.isAtLeast(leftOver.length, 1, "updates were claimed by the killed process")
        const leftIds = leftOver.map((row) => Number(row.update_id))
        // Calls the dead process held: their leases expire on their own, like its updates'.
        const cutDeliveries = yield* probe.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE status = 'sending'`)
        const inFlightAtKill = cutDeliveries[0]?.n ?? 0
        assert.isAtLeast(inFlightAtKill, 1, "a committed reply was on its way to the Bot API when the process died")

        const second = yield* spawnService(testEnv(databaseUrl, standIn.url, { SEND_RATE_PER_SECOND: "10000" }))
        yield* Ref.set(base, second.baseUrl)
        // Leases last 10 s unless renewed, so every reply the dead process owed is out within 15 s
        // of the restart, without anybody expiring anything by hand.
        yield* standIn.awaitCalls((calls) => answeredCount(plan, calls) === TOTAL, "15 seconds")
        yield* waitFor(
          "an empty outbox queue",
          probe.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE status IN ('pending', 'sending')`),
          (rows) => rows[0]?.n === 0,
          { timeout: "30 seconds" }
        )

        assert.deepStrictEqual(yield* probe.inboxStatuses, { done: TOTAL }, "every update is done")
        const taken = yield* probe.query<{ update_id: string; attempts: number }>(
          `SELECT update_id, attempts FROM inbox WHERE update_id = ANY($1::bigint[])`,
          [leftIds]
        )
        for (const row of taken) assert.isAtLeast(row.attempts, 2, `update ${row.update_id} was taken over after its lease expired`)

        // One outbox row per update: no update's transaction committed twice.
        const outbox = yield* probe.query<{ updates: number; rows: number; sent: number }>(
          `SELECT count(DISTINCT update_id)::int AS updates, count(*)::int AS rows, count(*) FILTER (WHERE status = 'sent')::int AS sent FROM outbox`
        )
        assert.deepStrictEqual(outbox[0], { updates: TOTAL, rows: TOTAL, sent: TOTAL })
        const users = yield* probe.query<{ n: number }>(`SELECT count(*)::int AS n FROM users WHERE telegram_id = ANY($1::bigint[])`, [
          blockedUsers
        ])
        assert.strictEqual(users[0]?.n, blockedUsers.length, "the blocked /start handlers committed once the lock was gone")

        // Replies keep per-chat order across the crash; a delivery cut off by the kill may be
        // repeated (at-least-once), right after itself and nowhere else.
        const calls = yield* standIn.calls
        const replies = repliesByChat(calls)
        let repeats = 0
        for (const chat of plan) {
          const got = replies.get(chat[0]!.chatId) ?? []
          const deduplicated = withoutImmediateRepeats(got)
          repeats += got.length - deduplicated.length
          assert.deepStrictEqual(deduplicated, chat.map((planned) => planned.text), `replies to chat ${chat[0]!.chatId}`)
        }
        assert.isAtMost(repeats, inFlightAtKill, "only deliveries in flight at the kill were repeated")
        assert.strictEqual(calls.filter((call) => call.method === "sendMessage").length, TOTAL + repeats)
      }),
    120_000
  )
})
