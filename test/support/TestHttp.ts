// Test-side helpers for the HTTP and lifecycle suites: reading the service's database with a
// client of our own, and raw HTTP requests that fetch cannot make (chunked bodies, one socket).
import { Effect, Schema, Scope } from "effect"
import { Agent, request } from "node:http"
import pg from "pg"
import { TEST_SECRET } from "./TestApp.ts"

/** Runs one statement on `url` with a short-lived connection of its own and decodes the rows. */
export const queryRows = <A>(
  url: string,
  schema: Schema.Decoder<A>,
  text: string,
  params: ReadonlyArray<unknown> = []
): Effect.Effect<ReadonlyArray<A>> =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      return client
    }),
    (client) =>
      Effect.promise(() => client.query<Record<string, unknown>>(text, [...params])).pipe(
        Effect.flatMap((result) => Schema.decodeUnknownEffect(Schema.Array(schema))(result.rows)),
        Effect.orDie
      ),
    (client) => Effect.promise(() => client.end())
  )

/** Runs statements that return nothing of interest (setup rows). */
export const execute = (url: string, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.asVoid(queryRows(url, Schema.Unknown, text, params))

export const InboxRow = Schema.Struct({
  update_id: Schema.String,
  chat_key: Schema.String,
  kind: Schema.String,
  status: Schema.String,
  attempts: Schema.Number,
  payload: Schema.Unknown
})

/** The inbox row of `updateId`, if there is one. */
export const inboxRow = (url: string, updateId: number) =>
  Effect.map(
    queryRows(url, InboxRow, "SELECT update_id::text, chat_key, kind, status, attempts, payload FROM inbox WHERE update_id = $1", [
      updateId
    ]),
    (rows) => rows[0]
  )

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
  readonly agent?: Agent
}): Effect.Effect<RawResponse> =>
  Effect.callback<RawResponse>((resume) => {
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
        resume(Effect.die(error)))
    })
    // A server that answers before reading the whole body may reset the upload; the answer counts.
    req.on("error", (error) => resume(Effect.die(error)))
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
 * POSTs an update to `${base}/webhook` the way Telegram does, with the test secret, on a
 * connection of its own (no keep-alive socket left to hold up the service's shutdown); the status.
 */
export const postWebhook = (base: string, body: string) =>
  Effect.callback<number, Error>((resume) => {
    const req = request(`${base}/webhook`, {
      method: "POST",
      agent: false,
      headers: {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "x-telegram-bot-api-secret-token": TEST_SECRET
      }
    }, (res) => {
      res.resume()
      res.once("end", () => resume(Effect.succeed(res.statusCode ?? 0)))
    })
    req.once("error", (error) => resume(Effect.fail(error)))
    req.end(body)
  }).pipe(Effect.orDie)
