import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Ref } from "effect"
import { BotApiRecorder } from "../support/BotApiRecorder.ts"
import { eventually } from "../support/Eventually.ts"
import { answeredCount, assertAnsweredInOrder, interleavedPlan, makePostStats, postPlan } from "../support/Load.ts"
import { spawnService } from "../support/ServiceProcess.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase, holdTransaction, pgProbe } from "../support/TestDatabase.ts"

const CHATS = 30
const PER_CHAT = 10
const TOTAL = CHATS * PER_CHAT
/** Chats whose 6th update is `/start`: its handler blocks on the users row the test holds. */
const BLOCKED_CHATS = [0, 1, 2]
const FIRST_CHAT_ID = 900_000
const blockedUsers = BLOCKED_CHATS.map((i) => FIRST_CHAT_ID + i)

const plan = interleavedPlan({
  chats: CHATS,
  perChat: PER_CHAT,
  firstUpdateId: 40_000,
  firstChatId: FIRST_CHAT_ID,
  seed: 99,
  text: (updateId, chatIndex, indexInChat) => (BLOCKED_CHATS.includes(chatIndex) && indexInChat === 5 ? "/start" : `u${updateId}`)
})
const startIds = plan.flatMap((chat) => chat.filter((planned) => planned.text === "/start").map((planned) => planned.updateId))

describe("kill -9 and restart", () => {
  it.live(
    "after SIGKILL mid-processing (handlers in their transactions, calls in flight), a new process on the same database answers every update in per-chat order, repeating only calls of updates that were running at the kill",
    () =>
      Effect.gen(function*() {
        const standIn = Context.get(yield* Layer.build(BotApiRecorder.layer()), BotApiRecorder)
        const databaseUrl = yield* Effect.promise(() => freshDatabase("crash"))
        const first = yield* spawnService(testEnv(databaseUrl, standIn.url, { UPDATE_TIMEOUT_MS: "5000", SEND_RATE_PER_SECOND: "10000" }))
        const pg = yield* pgProbe(databaseUrl)

        // Holding uncommitted users rows makes `/start` for these users wait inside its
        // transaction: those updates are certainly mid-processing when the process dies.
        const blocker = yield* holdTransaction(databaseUrl)
        yield* blocker.query(`INSERT INTO users (telegram_id) SELECT unnest($1::bigint[])`, [blockedUsers])
        // Slow answers keep Bot API calls in flight, so calls are cut off by the kill too.
        yield* standIn.setDelay(30)

        const base = yield* Ref.make(first.baseUrl)
        yield* postPlan(Ref.get(base), plan, makePostStats())
        yield* eventually(
          "a blocked /start update in processing and some replies delivered",
          Effect.all([
            pg.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM inbox WHERE status = 'processing' AND update_id = ANY($1::bigint[])`,
              [startIds]
            ),
            standIn.calls
          ]),
          ([rows, calls]) => (rows[0]?.n ?? 0) >= 1 && answeredCount(plan, calls) >= 50,
          { timeout: "30 seconds", interval: "20 millis" }
        )
        yield* first.kill("SIGKILL")
        assert.strictEqual((yield* first.exited).signal, "SIGKILL")
        assert.isBelow(answeredCount(plan, yield* standIn.calls), TOTAL, "the process died with work left")

        // Let the users rows go: the dead process's waiting statements finish on the server,
        // find their client gone and roll back. Wait until none of its sessions remain.
        yield* blocker.rollback
        yield* eventually("the killed process's sessions to end", pg.appSessions, (sessions) => sessions.length === 0, {
          timeout: "20 seconds"
        })
        const leftOver = yield* pg.query<{ update_id: string }>(`SELECT update_id FROM inbox WHERE status = 'processing'`)
        assert.isAtLeast(leftOver.length, 1, "updates were claimed by the killed process")
        const leftIds = leftOver.map((row) => Number(row.update_id))

        const second = yield* spawnService(testEnv(databaseUrl, standIn.url, { SEND_RATE_PER_SECOND: "10000" }))
        yield* Ref.set(base, second.baseUrl)
        // Leases last 10 s unless renewed, so every reply the dead process owed is out within 15 s
        // of the restart, without anybody expiring anything by hand. The call of an update that was
        // running at the kill (its outcome never recorded) may be made again by its re-run.
        const repeats = yield* assertAnsweredInOrder(plan, standIn, pg, { timeout: "15 seconds", repeats: "immediate" })
        assert.isAtMost(repeats, leftIds.length, "only calls of updates running at the kill were repeated, each at most once")
        assert.strictEqual((yield* standIn.calls).filter((call) => call.method === "sendMessage").length, TOTAL + repeats)

        const taken = yield* pg.query<{ update_id: string; attempts: number }>(
          `SELECT update_id, attempts FROM inbox WHERE update_id = ANY($1::bigint[])`,
          [leftIds]
        )
        for (const row of taken) assert.isAtLeast(row.attempts, 2, `update ${row.update_id} was taken over after its lease expired`)
        const users = yield* pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM users WHERE telegram_id = ANY($1::bigint[])`, [
          blockedUsers
        ])
        assert.strictEqual(users[0]?.n, blockedUsers.length, "the blocked /start handlers committed once the lock was gone")
      }),
    120_000
  )
})
