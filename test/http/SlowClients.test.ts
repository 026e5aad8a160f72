import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Schedule } from "effect"
import { connect, type Socket } from "node:net"
import { HTTP_LIMITS } from "../../src/App.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { baseUrl, testAppLayer } from "../support/TestApp.ts"
import { postUpdate, rawRequest } from "../support/TestHttp.ts"
import { freshDatabase, inboxRow, pgProbe } from "../support/TestDatabase.ts"

const SLOW_SOCKETS = 200

interface SlowSocket {
  readonly socket: Socket
  /** Completes when the socket is closed: by the server, since we only destroy it when the scope closes. */
  readonly closed: Deferred.Deferred<void>
}

/** A socket that sends a partial request and then one more header byte every 200 ms, never finishing. */
const slowSocket = (port: number, partial: string, localAddress = "127.0.0.1") =>
  Effect.gen(function*() {
    const closed = yield* Deferred.make<void>()
    const connected = yield* Deferred.make<void>()
    const socket = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const socket = connect({ host: "127.0.0.1", port, localAddress })
        socket.on("connect", () => Deferred.doneUnsafe(connected, Effect.void))
        socket.on("error", () => undefined)
        socket.on("close", () => Deferred.doneUnsafe(closed, Effect.void))
        socket.on("data", () => undefined)
        return socket
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    yield* Deferred.await(connected)
    socket.write(partial)
    yield* Effect.sync(() => socket.writable && socket.write("a")).pipe(
      Effect.repeat({ schedule: Schedule.spaced("200 millis"), while: () => socket.writable }),
      Effect.forkScoped
    )
    return { socket, closed } satisfies SlowSocket
  })

describe("slow HTTP clients", () => {
  it.live(
    `${SLOW_SOCKETS} sockets dribbling an unfinished request neither block /health/live nor POST /webhook, and the server closes them within its headers timeout`,
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("slow_clients"))
        yield* Effect.gen(function*() {
          const base = yield* baseUrl
          const port = Number(new URL(base).port)
          const startedAt = yield* Clock.currentTimeMillis

          // Half stop inside the request line, half inside the headers of a webhook request.
          const sockets = yield* Effect.forEach(
            Array.from({ length: SLOW_SOCKETS }, (_, i) => i),
            (i) =>
              slowSocket(
                port,
                i % 2 === 0 ? "POST /webhoo" : "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ",
                // From four loopback addresses: one address may hold at most 100 sockets.
                `127.0.0.${2 + (i % 4)}`
              ),
            { concurrency: 20 }
          )

          // While every one of them hangs, the service answers.
          const live = yield* rawRequest({ url: `${base}/health/live`, method: "GET" })
          assert.strictEqual(live.status, 200)
          const update = sampleUpdate({ updateId: 880_001, chatId: 880_001, text: "through the crowd" })
          const stored = yield* postUpdate(base, update)
          assert.strictEqual(stored.status, 200, stored.body)
          assert.strictEqual((yield* inboxRow(yield* pgProbe(databaseUrl), 880_001))?.update_id, "880001")
          assert.isTrue(sockets.every(({ socket }) => !socket.destroyed), "the slow sockets were still open while the service answered")

          // Each socket is closed by the server: the headers timeout plus the connection sweep's period, with margin.
          const deadline = HTTP_LIMITS.headersTimeoutMs + 10_000
          yield* Effect.forEach(sockets, ({ closed }) => Deferred.await(closed), { discard: true }).pipe(Effect.timeout(deadline))
          const elapsed = (yield* Clock.currentTimeMillis) - startedAt
          assert.isAtLeast(elapsed, HTTP_LIMITS.headersTimeoutMs - 1_000, "not closed before the timeout")
        }).pipe(Effect.scoped, Effect.provide(testAppLayer({ databaseUrl })))
      }),
    60_000
  )

  it.live(
    "one remote address holds at most 100 sockets: the 101st is closed at once, other addresses are still served",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Effect.promise(() => freshDatabase("per_address_cap"))
        yield* Effect.gen(function*() {
          const base = yield* baseUrl
          const port = Number(new URL(base).port)
          const hog = "127.0.0.9"
          const held = yield* Effect.forEach(
            Array.from({ length: HTTP_LIMITS.maxConnectionsPerAddress }, () => 0),
            () => slowSocket(port, "GET /health/li", hog),
            { concurrency: 20 }
          )
          // The server accepts connections in arrival order, so the 101st is counted after the first 100.
          const extra = yield* slowSocket(port, "GET /health/li", hog)
          const startedAt = yield* Clock.currentTimeMillis
          yield* Deferred.await(extra.closed).pipe(Effect.timeout("5 seconds"))
          assert.isBelow((yield* Clock.currentTimeMillis) - startedAt, HTTP_LIMITS.headersTimeoutMs, "closed on arrival, not by a timeout")
          assert.isTrue(held.every(({ socket }) => !socket.destroyed), "the first 100 stay open")

          // Another address is served while the hog holds its 100.
          const live = yield* rawRequest({ url: `${base}/health/live`, method: "GET" })
          assert.strictEqual(live.status, 200)

          // A slot freed by the hog is its own again.
          held[0]!.socket.destroy()
          yield* Deferred.await(held[0]!.closed)
          const again = yield* Effect.gen(function*() {
            const next = yield* slowSocket(port, "GET /health/li", hog)
            // Closed at once means the server had not yet seen the freed slot: try again.
            const closedAtOnce = yield* Deferred.await(next.closed).pipe(Effect.timeoutOption("500 millis"))
            return closedAtOnce._tag === "None"
          }).pipe(Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (open) => open, times: 20 }))
          assert.isTrue(again, "a freed slot accepts a new socket from the same address")
        }).pipe(Effect.scoped, Effect.provide(testAppLayer({ databaseUrl })))
      }),
    60_000
  )
})
