// A minimal OTLP/HTTP sink for `npm run bench -- --telemetry`, run as its own process:
//   node bench/otlpSink.ts [--port N]
// It prints "otlp sink listening on <url>" once ready. POST /v1/traces, /v1/metrics and /v1/logs
// are drained and answered 200 with an empty Export*ServiceResponse in the request's encoding
// (`{}` for JSON, no bytes for protobuf: everything accepted); it
// only counts requests and body bytes per path (as they came over the wire, compressed or not).
// GET /__stats reads the counters. Anything else is answered 404 and counted as `other`.
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"
import { parseArgs } from "node:util"

export const otlpPaths = ["/v1/traces", "/v1/metrics", "/v1/logs"] as const
export type OtlpPath = (typeof otlpPaths)[number]

export interface SinkCount {
  readonly requests: number
  readonly bytes: number
}
export interface SinkSnapshot {
  readonly paths: Readonly<Record<OtlpPath, SinkCount>>
  readonly other: number
  readonly requests: number
  readonly bytes: number
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null
const isCount = (value: unknown): value is SinkCount =>
  isRecord(value) && typeof value["requests"] === "number" && typeof value["bytes"] === "number"

export const isSinkSnapshot = (value: unknown): value is SinkSnapshot =>
  isRecord(value) && typeof value["other"] === "number" && typeof value["requests"] === "number" &&
  typeof value["bytes"] === "number" && isRecord(value["paths"]) &&
  otlpPaths.every((path) => isRecord(value["paths"]) && isCount(value["paths"][path]))

const isOtlpPath = (path: string): path is OtlpPath => otlpPaths.some((p) => p === path)

const main = () => {
  const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } })
  const counts: Record<OtlpPath, { requests: number; bytes: number }> = {
    "/v1/traces": { requests: 0, bytes: 0 },
    "/v1/metrics": { requests: 0, bytes: 0 },
    "/v1/logs": { requests: 0, bytes: 0 }
  }
  let other = 0
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/"
    if (req.method === "GET" && path === "/__stats") {
      const all = Object.values(counts)
      const snapshot: SinkSnapshot = {
        paths: counts,
        other,
        requests: all.reduce((sum, c) => sum + c.requests, 0),
        bytes: all.reduce((sum, c) => sum + c.bytes, 0)
      }
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify(snapshot))
      return
    }
    let bytes = 0
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length
    })
    req.on("end", () => {
      if (req.method === "POST" && isOtlpPath(path)) {
        counts[path].requests += 1
        counts[path].bytes += bytes
        const protobuf = (req.headers["content-type"] ?? "").startsWith("application/x-protobuf")
        res.writeHead(200, { "content-type": protobuf ? "application/x-protobuf" : "application/json" })
        res.end(protobuf ? "" : "{}")
      } else {
        other += 1
        res.writeHead(404, { "content-type": "application/json" })
        res.end("{}")
      }
    })
  })
  server.keepAliveTimeout = 60_000
  server.listen(Number(values.port), "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : Number(values.port)
    console.log(`otlp sink listening on http://127.0.0.1:${port}`)
  })
}

// Run as a script (not when run.ts imports the types and guards above).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main()
