// Limits shared by every HTTP listener of the service. Node's defaults let a client take 60 s to
// send its headers and 300 s for a request, with no cap on connections: a few hundred sockets
// that dribble a request line would hold the port. Telegram sends small bodies fast, so anything
// slower is not an update, and a Prometheus scrape is smaller still.
import { createServer, type Server } from "node:http"

export const HTTP_LIMITS = {
  /** Whole header block, from the connection's first byte (or the previous response on keep-alive). */
  headersTimeoutMs: 10_000,
  /** Whole request, headers and body (the body is at most 1 MiB). */
  requestTimeoutMs: 20_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** Sockets at once on the main port; more are closed on arrival. */
  maxConnections: 1_000,
  /**
   * Sockets at once from one remote address on the main port: Telegram opens at most 100
   * (setWebhook's max_connections), so one client can never take the whole cap.
   */
  maxConnectionsPerAddress: 100,
  /** Sockets at once on the metrics port: a scraper or two. */
  metricsMaxConnections: 16
} as const

export interface ListenerCaps {
  readonly maxConnections: number
  readonly maxConnectionsPerAddress: number
}

/** An HTTP server with the shared timeouts and the given connection caps. */
export const boundedServer = (caps: ListenerCaps): Server => {
  const server = createServer({
    keepAliveTimeout: HTTP_LIMITS.keepAliveTimeoutMs,
    headersTimeout: HTTP_LIMITS.headersTimeoutMs,
    requestTimeout: HTTP_LIMITS.requestTimeoutMs,
    // Node enforces the two timeouts above only when it sweeps its connections (every 30 s by
    // default), so a slow client would live up to 30 s past its deadline.
    connectionsCheckingInterval: 1_000
  })
  server.maxConnections = caps.maxConnections
  capPerAddress(server, caps.maxConnectionsPerAddress)
  return server
}

/**
 * Closes a socket on arrival when its remote address already holds `cap` open sockets. A plain
 * counter in Node's own connection callback: it runs before any request is parsed, costs one map
 * lookup per connection (not per request), and frees the slot on the socket's close.
 */
const capPerAddress = (server: Server, cap: number) => {
  const open = new Map<string, number>()
  server.on("connection", (socket) => {
    const address = socket.remoteAddress ?? ""
    const count = open.get(address) ?? 0
    if (count >= cap) {
      socket.destroy()
      return
    }
    open.set(address, count + 1)
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1
      if (left <= 0) open.delete(address)
      else open.set(address, left)
    })
  })
}
