import * as http from "node:http"
import * as https from "node:https"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"

/** What grammY's API client passes to `fetch`: its JSON or multipart payload and its keep-alive agent. */
interface BotApiRequest {
  readonly method?: string
  readonly headers?: Record<string, string>
  readonly body?: string | Readable
  readonly signal?: AbortSignal
  readonly agent?: http.Agent
}

/** The part of a fetch answer grammY reads. */
interface BotApiAnswer {
  readonly json: () => Promise<unknown>
}

/**
 * The `fetch` grammY's `Api` calls the Bot API with. It reads nothing of the answer but `.json()`,
 * so this goes to `node:http` directly, on the keep-alive agent grammY passes (one per API root),
 * instead of building node-fetch's Request, Headers and Response around every call. An answer that
 * is not JSON (a proxy's 502 page) rejects `.json()`, as with node-fetch, and grammY reports it as
 * an `HttpError`.
 */
export const botApiFetch = (url: string, init: BotApiRequest): Promise<BotApiAnswer> =>
  new Promise((resolve, reject) => {
    const target = new URL(url)
    // A JSON body's length is known: without it Node sends the body chunked, in more writes.
    const headers = typeof init.body === "string"
      ? { ...init.headers, "content-length": String(Buffer.byteLength(init.body)) }
      : init.headers
    const request = (target.protocol === "https:" ? https : http).request(target, {
      method: init.method ?? "GET",
      ...(headers === undefined ? {} : { headers }),
      ...(init.agent === undefined ? {} : { agent: init.agent }),
      ...(init.signal === undefined ? {} : { signal: init.signal })
    }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("error", failed)
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8")
        resolve({ json: () => new Promise((parsed) => parsed(JSON.parse(text))) })
      })
    })
    // Named like node-fetch's, URL included: BotApi scrubs the token out of every error it reports.
    const failed = (error: Error) => reject(new Error(`request to ${url} failed, reason: ${error.message}`, { cause: error }))
    request.on("error", failed)
    // Multipart uploads (an InputFile) come as a stream; everything else as a JSON string.
    if (init.body instanceof Readable) pipeline(init.body, request).catch(failed)
    else request.end(init.body)
  })
