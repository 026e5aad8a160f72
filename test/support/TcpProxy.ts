// A TCP proxy the test can pause: while paused every connection stays open and new ones are
// accepted, but nothing is forwarded either way. Behind it, PostgreSQL looks hung (a server that
// accepts connections and answers nothing), which fails nothing fast, unlike a stopped server.
import { Effect, type Scope } from "effect"
import { connect, createServer, type Socket } from "node:net"

export interface TcpProxy {
  readonly port: number
  /** Stops forwarding: whatever arrives from now on is held back. */
  readonly pause: Effect.Effect<void>
  /** Forwards what was held back, and everything after it. */
  readonly resume: Effect.Effect<void>
}

/** A proxy on 127.0.0.1 to `port` on 127.0.0.1, closed with the scope. */
export const tcpProxy = (port: number): Effect.Effect<TcpProxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let paused = false
    const held: Array<() => void> = []
    const sockets = new Set<Socket>()
    const forward = (from: Socket, to: Socket) => {
      from.on("data", (chunk) => {
        if (paused) held.push(() => to.write(chunk))
        else to.write(chunk)
      })
      from.on("close", () => to.destroy())
      from.on("error", () => to.destroy())
    }
    const server = createServer((client) => {
      const upstream = connect({ host: "127.0.0.1", port })
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
      }
      forward(client, upstream)
      forward(upstream, client)
    })
    const listening = yield* Effect.acquireRelease(
      Effect.callback<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      }),
      () =>
        Effect.callback<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return {
      port: listening,
      pause: Effect.sync(() => {
        paused = true
      }),
      resume: Effect.sync(() => {
        paused = false
        for (const send of held.splice(0)) send()
      })
    } satisfies TcpProxy
  })
