// The test kit's HTTP: the one way to post an update (`postUpdate`), and raw requests that fetch
// cannot make (chunked bodies, one socket).
import { Data, Effect, Scope } from "effect"
import { Agent, request } from "node:http"
import { TEST_SECRET } from "./TestApp.ts"

/** No HTTP answer came: the connection was refused or reset. */
export class RequestFailed extends Data.TaggedError("RequestFailed")<{ readonly reason: string }> {}

export interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string | ReadonlyArray<string> | undefined>
  readonly body: string
}

/**
 * One HTTP/1.1 request with `node:http`. `chunks` are written one by one without a
 * Content-Length unless `headers` declares one, so several chunks go out chunked. The answer is
 * returned as soon as it is complete, even if the server stopped reading the body (413).
 */
export const rawRequest = (options: {
  readonly url: string
  readonly method?: string
  readonly headers?: Record<string, string>
  readonly chunks?: ReadonlyArray<string | Buffer>
  /** `false` for a connection of its own, closed after the answer. */
  readonly agent?: Agent | false
}): Effect.Effect<RawResponse, RequestFailed> =>
  Effect.callback<RawResponse, RequestFailed>((resume) => {
    const url = new URL(options.url)
    const req = request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: options.method ?? "POST",
      headers: options.headers ?? {},
      ...(options.agent !== undefined ? { agent: options.agent } : {})
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.once("end", () =>
        resume(Effect.succeed({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") })))
      res.once("error", (error) =>
        resume(Effect.fail(new RequestFailed({ reason: String(error) }))))
    })
    // A server that answers before reading the whole body may reset the upload; the answer counts.
    req.on("error", (error) => resume(Effect.fail(new RequestFailed({ reason: String(error) }))))
    const write = (index: number): void => {
      const chunks = options.chunks ?? []
      if (index >= chunks.length || req.destroyed) {
        req.end()
        return
      }
      if (req.write(chunks[index]!)) write(index + 1)
      else req.once("drain", () => write(index + 1))
    }
    write(0)
    return Effect.sync(() => req.destroy())
  })

/** A keep-alive agent with a single socket, so consecutive requests share one connection. */
export const singleSocketAgent: Effect.Effect<Agent, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => new Agent({ keepAlive: true, maxSockets: 1 })),
  (agent) => Effect.sync(() => agent.destroy())
)

/**
 * POSTs an update to `${base}/webhook` the way Telegram does, with the test secret (`headers`
 * win); a string is sent as the body as it is. Each post has a connection of its own: no
 * keep-alive socket is left to hold up a service's shutdown.
 */
export const postUpdate = (base: string, update: unknown, headers: Record<string, string> = {}) => {
  const body = typeof update === "string" ? update : JSON.stringify(update)
  return rawRequest({
    url: `${base}/webhook`,
    headers: {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      "x-telegram-bot-api-secret-token": TEST_SECRET,
      ...headers
    },
    chunks: [body],
    agent: false
  })
}

/** `postUpdate`'s status alone. */
export const postStatus = (base: string, update: unknown) => Effect.map(postUpdate(base, update), (response) => response.status)
