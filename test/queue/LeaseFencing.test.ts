import { assert, describe, it } from "@effect/vitest"
import { Effect, Latch } from "effect"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { awaitIdlePool, startFaultyApp } from "../support/FaultyApp.ts"
import { awaitProbe } from "../support/handlers/FaultyHandlers.ts"
import { postUpdate } from "../support/TestHttp.ts"

const UPDATE_ID = 91_001
const CHAT_ID = 891_001

describe("lease fencing", () => {
  it.live(
    "a live instance whose lease is taken over mid-handler commits nothing: its write and its reply never appear, and the new owner's result stays",
    () =>
      Effect.gen(function*() {
        // A long timeout: only the takeover may end this handler's claim on the update.
        const app = yield* startFaultyApp("lease_fencing", {
          UPDATE_TIMEOUT_MS: "60000",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        })
        const posted = yield* postUpdate(app.base, sampleUpdate({ updateId: UPDATE_ID, chatId: CHAT_ID, text: "/latch" }))
        assert.strictEqual(posted.status, 200)
        // The handler has written its mark and queued its reply, and waits on the latch.
        yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.updateId === UPDATE_ID && e.marker === "latch"), "20 seconds")

        // Another instance takes the update over, as after an expired lease: a new lease on the row.
        const taken = yield* app.pg.query<{ lease_id: string }>(
          `UPDATE inbox SET lease_id = gen_random_uuid() WHERE update_id = $1 AND status = 'processing' RETURNING lease_id::text`,
          [UPDATE_ID]
        )
        assert.strictEqual(taken.length, 1, "the update was running under a lease")
        const newLease = taken[0]!.lease_id

        yield* Latch.open(app.latch)
        // The old owner's transaction is over (committed or rolled back) once its pool slot is free.
        yield* awaitIdlePool(app.db, "20 seconds")

        const marks = yield* app.pg.query<{ marker: string }>(`SELECT marker FROM test_marks WHERE update_id = $1`, [UPDATE_ID])
        assert.deepStrictEqual(marks, [], "the old owner's write was rolled back")
        const outbox = yield* app.pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE update_id = $1`, [UPDATE_ID])
        assert.strictEqual(outbox[0]?.n, 0, "the old owner's reply was never queued")
        const row = yield* app.pg.query<{ status: string; lease_id: string | null }>(
          `SELECT status, lease_id::text FROM inbox WHERE update_id = $1`,
          [UPDATE_ID]
        )
        assert.deepStrictEqual(row[0], { status: "processing", lease_id: newLease }, "the update still belongs to the new owner")

        // The new owner finishes under its lease; nothing of the old owner's shows up afterwards.
        const finished = yield* app.pg.query(
          `UPDATE inbox SET status = 'done', finished_at = now(), locked_until = NULL, lease_id = NULL
           WHERE update_id = $1 AND lease_id = $2::uuid RETURNING 1`,
          [UPDATE_ID, newLease]
        )
        assert.strictEqual(finished.length, 1, "the new owner's lease was still in place")
        yield* awaitIdlePool(app.db)
        const after = yield* app.pg.query<{ status: string; marks: number; outbox: number }>(
          `SELECT status, (SELECT count(*)::int FROM test_marks WHERE update_id = $1) AS marks,
                  (SELECT count(*)::int FROM outbox WHERE update_id = $1) AS outbox
           FROM inbox WHERE update_id = $1`,
          [UPDATE_ID]
        )
        assert.deepStrictEqual(after[0], { status: "done", marks: 0, outbox: 0 })
        const replies = (yield* app.standIn.calls).filter((call) => String(call.params["text"]) === `latched ${UPDATE_ID}`)
        assert.deepStrictEqual(replies, [], "no reply of the old owner reached the Bot API")
      }),
    60_000
  )

  it.live(
    "an attempt whose lease was taken over makes no more Bot API calls once its instance has seen the takeover",
    () =>
      Effect.gen(function*() {
        const updateId = 91_002
        const app = yield* startFaultyApp("lease_fencing_calls", {
          UPDATE_TIMEOUT_MS: "60000",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        })
        yield* postUpdate(app.base, sampleUpdate({ updateId, chatId: CHAT_ID + 1, text: "/latchcall" }))
        yield* awaitProbe(app.probe, (entries) => entries.some((e) => e.updateId === updateId && e.marker === "latchcall"), "20 seconds")
        yield* app.pg.query(`UPDATE inbox SET lease_id = gen_random_uuid() WHERE update_id = $1 AND status = 'processing'`, [updateId])
        // The lease renewal finds the lease gone and ends the attempt's calls.
        yield* app.logs.await("the takeover seen", (log) => log.message.includes(`the lease of ${updateId} was taken over`))
        yield* Latch.open(app.latch)
        yield* awaitIdlePool(app.db, "20 seconds")
        const replies = (yield* app.standIn.calls).filter((call) => String(call.params["text"]) === `after the latch ${updateId}`)
        assert.deepStrictEqual(replies, [], "the old owner's call never reached the Bot API")
        const marks = yield* app.pg.query(`SELECT 1 FROM test_marks WHERE update_id = $1`, [updateId])
        assert.deepStrictEqual(marks, [], "and its write was rolled back")
      }),
    60_000
  )

  it.live(
    "finishes that share one statement are fenced each by its own lease: the taken-over update writes nothing, the others finish and reply",
    () =>
      Effect.gen(function*() {
        const app = yield* startFaultyApp("lease_fencing_batch", {
          DB_POOL_MAX: "20",
          WORKER_CONCURRENCY: "16",
          UPDATE_TIMEOUT_MS: "60000",
          SEND_RATE_PER_SECOND: "10000",
          SHUTDOWN_GRACE_MS: "200"
        })
        // Handlers that write nothing, one per chat, all waiting on the latch: opened, they finish
        // at the same moment, so their finishes go out together.
        const updateIds = Array.from({ length: 12 }, (_, i) => UPDATE_ID + 100 + i)
        for (const [i, updateId] of updateIds.entries()) {
          const posted = yield* postUpdate(app.base, sampleUpdate({ updateId, chatId: CHAT_ID + 100 + i, text: "/wait" }))
          assert.strictEqual(posted.status, 200)
        }
        yield* awaitProbe(app.probe, (entries) =>
          updateIds.every((id) => entries.some((e) => e.updateId === id && e.marker === "wait")), "20 seconds")

        const lost = updateIds[5]!
        const taken = yield* app.pg.query<{ lease_id: string }>(
          `UPDATE inbox SET lease_id = gen_random_uuid() WHERE update_id = $1 AND status = 'processing' RETURNING lease_id::text`,
          [lost]
        )
        assert.strictEqual(taken.length, 1, "the update was running under a lease")

        yield* Latch.open(app.latch)
        const others = updateIds.filter((id) =>
          id !== lost
        )
        yield* app.standIn.awaitCalls((calls) => {
          const texts = calls.map((call) => String(call.params["text"]))
          return others.every((id) => texts.includes(`waited ${id}`))
        }, "20 seconds")
        yield* awaitIdlePool(app.db, "20 seconds")

        const rows = yield* app.pg.query<{ update_id: number; status: string; lease_id: string | null; outbox: number }>(
          `SELECT update_id::int, status, lease_id::text, (SELECT count(*)::int FROM outbox o WHERE o.update_id = i.update_id) AS outbox
           FROM inbox i WHERE update_id = ANY($1::bigint[]) ORDER BY update_id`,
          [updateIds]
        )
        for (const row of rows) {
          if (row.update_id === lost) {
            assert.deepStrictEqual(row, { update_id: lost, status: "processing", lease_id: taken[0]!.lease_id, outbox: 0 })
          } else {
            assert.deepStrictEqual(row, { update_id: row.update_id, status: "done", lease_id: null, outbox: 1 })
          }
        }
        const texts = (yield* app.standIn.calls).map((call) => String(call.params["text"]))
        assert.notInclude(texts, `waited ${lost}`, "no reply of the taken-over update reached the Bot API")
        for (const id of others) assert.strictEqual(texts.filter((text) => text === `waited ${id}`).length, 1)
      }),
    60_000
  )
})
