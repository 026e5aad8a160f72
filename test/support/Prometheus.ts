// Scraping a running service's GET /metrics and reading the Prometheus text format.
import { Effect, Schedule } from "effect"
import { request } from "node:http"
import { BotApiRecorder } from "./BotApiRecorder.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { spawnService } from "./ServiceProcess.ts"
import { testEnv } from "./TestApp.ts"
import { freshDatabase } from "./TestDatabase.ts"
import { postStatus } from "./TestHttp.ts"

export interface Fetched {
  readonly status: number
  readonly contentType: string
  readonly body: string
}

export const fetchText = (url: string) =>
  Effect.callback<Fetched, Error>((resume) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.once("end", () =>
        resume(Effect.succeed({
          status: res.statusCode ?? 0,
          contentType: String(res.headers["content-type"]),
          body: Buffer.concat(chunks).toString("utf8")
        })))
    })
    req.once("error", (error) => resume(Effect.fail(error)))
    req.end()
  }).pipe(Effect.orDie)

/** Metric families of a scrape by name, from their `# TYPE` lines. */
export const families = (body: string): ReadonlyMap<string, string> =>
  new Map([...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]))

/** Whether `name` is a series name a scrape with these families can have (`_bucket` of a histogram…). */
export const exposes = (found: ReadonlyMap<string, string>, name: string): boolean =>
  found.has(name) ||
  [...found].some(([family, type]) =>
    (type === "histogram" && ["_bucket", "_sum", "_count"].some((suffix) => name === family + suffix)) ||
    (type === "summary" && ["_sum", "_count"].some((suffix) => name === family + suffix))
  )

/**
 * Runs the service with METRICS_PORT, has it process one `/start` update (so that every metric
 * that appears on first use has appeared) and returns a scrape taken once that update was done.
 */
export const scrapeAfterOneUpdate = (name: string, updateId: number, chatId: number, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const standIn = yield* BotApiRecorder
    const databaseUrl = yield* Effect.promise(() => freshDatabase(name))
    const service = yield* spawnService(testEnv(databaseUrl, standIn.url, { METRICS_PORT: "0", ...env }))
    const metricsUrl = yield* service.waitForOutput(/http:\/\/127\.0\.0\.1:\d+\/metrics/)
    const update = JSON.stringify(sampleUpdate({ updateId, chatId, text: "/start" }))
    const stored = yield* postStatus(service.baseUrl, update)
    const scrape = yield* fetchText(metricsUrl).pipe(
      Effect.repeat({
        schedule: Schedule.spaced("100 millis"),
        until: (r) =>
          /^steadfast_updates_processed_total\{[^}]*outcome="done"/m.test(r.body) &&
          /^steadfast_botapi_call_duration_seconds_count\{/m.test(r.body)
      }),
      Effect.timeout("30 seconds")
    )
    return { service, metricsUrl, stored, scrape }
  })
