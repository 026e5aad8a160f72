import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Ref } from "effect"
import pg from "pg"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
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
    "after SIGKILL mid-processing (handlers in their transactions, calls in flight), a new process on the same database answers every update in per-chat order, repeating only calls of updates that were running at the kill",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
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
        // Slow answers keep Bot API calls in flight, so calls are cut off by the kill too.
        yield* standIn.setDelay(30)

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

        const second = yield* spawnService(testEnv(databaseUrl, standIn.url, { SEND_RATE_PER_SECOND: "10000" }))
        yield* Ref.set(base, second.baseUrl)
        // Leases last 10 s unless renewed, so every reply the dead process owed is out within 15 s
        // of the restart, without anybody expiring anything by hand.
        yield* standIn.awaitCalls((calls) => answeredCount(plan, calls) === TOTAL, "15 seconds")
        yield* waitFor("every update done", probe.inboxStatuses, (statuses) => statuses["done"] === TOTAL, { timeout: "30 seconds" })
        const taken = yield* probe.query<{ update_id: string; attempts: number }>(
          `SELECT update_id, attempts FROM inbox WHERE update_id = ANY($1::bigint[])`,
          [leftIds]
        )
        for (const row of taken) assert.isAtLeast(row.attempts, 2, `update ${row.update_id} was taken over after its lease expired`)

        const users = yield* probe.query<{ n: number }>(`SELECT count(*)::int AS n FROM users WHERE telegram_id = ANY($1::bigint[])`, [
          blockedUsers
        ])
        assert.strictEqual(users[0]?.n, blockedUsers.length, "the blocked /start handlers committed once the lock was gone")

        // Replies keep per-chat order across the crash; the call of an update that was running at the
        // kill (its outcome never recorded) may be made again by its re-run, right after itself and
        // nowhere else, and at most once more.
        const calls = yield* standIn.calls
        const replies = repliesByChat(calls)
        let repeats = 0
        for (const chat of plan) {
          const got = replies.get(chat[0]!.chatId) ?? []
          const deduplicated = withoutImmediateRepeats(got)
          repeats += got.length - deduplicated.length
          assert.deepStrictEqual(deduplicated, chat.map((planned) => planned.text), `replies to chat ${chat[0]!.chatId}`)
        }
        assert.isAtMost(repeats, leftIds.length, "only calls of updates running at the kill were repeated, each at most once")
        assert.strictEqual(calls.filter((call) => call.method === "sendMessage").length, TOTAL + repeats)
      }),
    120_000
  )
})
