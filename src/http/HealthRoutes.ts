import { Clock, DateTime, Duration, Effect, Exit, Fiber, Option } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { AppConfig } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { Inbox } from "../inbox/Inbox.ts"
import { Lifecycle } from "../Lifecycle.ts"
import { redactUrls } from "../telegram/RedactUrls.ts"
import { type WebhookReport, WebhookStatus } from "../telegram/WebhookStatus.ts"

type Status = "pass" | "warn" | "fail"

interface Check {
  readonly observedValue?: unknown
  readonly observedUnit?: string
  readonly status: Status
  readonly time: string
  readonly output?: string
}

/** Each database check gets this long, so /health answers within 100 ms whatever the database does. */
const CHECK_TIMEOUT = Duration.millis(80)
/**
 * Requests within this long of a database probe share its answer, and concurrent ones share the
 * probe in flight: a burst of /health requests (or a scraper polling every instance) costs at
 * most one query per second, and nobody can load the database through an unauthenticated route.
 */
const PROBE_TTL = Duration.seconds(1)
/** A webhook delivery error newer than this makes the telegram:webhook check warn. */
const RECENT_WEBHOOK_ERROR_SECONDS = 600

const worst = (statuses: ReadonlyArray<Status>): Status => statuses.includes("fail") ? "fail" : statuses.includes("warn") ? "warn" : "pass"

const health = (
  body: { readonly status: Status; readonly checks: Record<string, ReadonlyArray<Check>> },
  headers: Record<string, string> = {}
) =>
  HttpServerResponse.text(JSON.stringify(body), {
    status: body.status === "fail" ? 503 : 200,
    contentType: "application/health+json",
    headers: { "cache-control": "no-store", ...headers }
  })

/**
 * Runs a database check under CHECK_TIMEOUT; none when it failed or took too long. The check runs
 * in a fiber of its own that is interrupted in the background: interrupting a query on a server
 * that answers nothing waits for a cancel request and a drain (seconds), and /health must not.
 */
const timed = <A, E, R>(check: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkDetach(check)
    const exit = yield* Effect.timeoutOption(Fiber.await(fiber), CHECK_TIMEOUT)
    if (Option.isNone(exit)) {
      yield* Effect.forkDetach(Fiber.interrupt(fiber))
      return Option.none<A>()
    }
    return Exit.isSuccess(exit.value) ? Option.some(exit.value.value) : Option.none<A>()
  })

/**
 * `GET /health` (readiness, IETF "Health Check Response Format for HTTP APIs") and
 * `GET /health/live` (liveness: touches neither the database nor the network, so a database
 * outage never gets a healthy process restarted). Nothing here shows configuration or secrets.
 */
export const HealthRoutes = HttpRouter.use(Effect.fn(function*(router) {
  const config = yield* AppConfig
  const db = yield* Database
  const inbox = yield* Inbox
  const lifecycle = yield* Lifecycle
  const webhook = yield* WebhookStatus
  const backlogWarnSeconds = Duration.toSeconds(config.backlogWarnAge)

  yield* router.add("GET", "/health/live", Effect.sync(() => health({ status: "pass", checks: {} })))

  // One round trip answers both database checks: the backlog query's own time is the response time.
  const probe = yield* Effect.cachedWithTTL(
    Effect.all({ at: Clock.currentTimeMillis, backlog: timed(Effect.timed(inbox.backlog(CHECK_TIMEOUT))) }),
    PROBE_TTL
  )

  yield* router.add(
    "GET",
    "/health",
    Effect.gen(function*() {
      if (lifecycle.isDraining()) return health({ status: "fail", checks: {} }, { connection: "close" })
      const nowMillis = yield* Clock.currentTimeMillis
      const time = DateTime.formatIso(DateTime.makeUnsafe(nowMillis))

      const probed = yield* probe
      const probedAt = DateTime.formatIso(DateTime.makeUnsafe(probed.at))
      const pool = yield* db.stats
      const report = yield* webhook.report

      const checks: Record<string, ReadonlyArray<Check>> = {
        "postgres:responseTime": [Option.match(probed.backlog, {
          onNone: () => ({ status: "fail" as const, time: probedAt, output: "PostgreSQL did not answer in time" }),
          onSome: ([elapsed]) => ({
            observedValue: Duration.toMillis(elapsed),
            observedUnit: "ms",
            status: "pass" as const,
            time: probedAt
          })
        })],
        "postgres:connections": [{
          observedValue: { used: pool.used, idle: pool.idle, max: pool.max, pending: pool.pending },
          status: pool.pending > 0 ? "warn" : "pass",
          time
        }],
        ...Option.match(probed.backlog, {
          onNone: () => ({
            "inbox:backlog": [{ status: "fail" as const, time: probedAt, output: "inbox not readable in time" }],
            "inbox:dead": [{ status: "fail" as const, time: probedAt, output: "inbox not readable in time" }]
          }),
          onSome: ([, b]) => ({
            "inbox:backlog": [{
              observedValue: { pending: b.pending, oldestSeconds: Math.round(b.oldestSeconds), outboxPending: b.outbox },
              status: b.oldestSeconds > backlogWarnSeconds ? "warn" as const : "pass" as const,
              time: probedAt,
              ...(b.oldestSeconds > backlogWarnSeconds ? { output: `oldest pending update is over ${backlogWarnSeconds} s old` } : {})
            }],
            "inbox:dead": [{
              observedValue: b.dead,
              status: b.dead > 0 ? "warn" as const : "pass" as const,
              time: probedAt,
              ...(b.dead > 0 ? { output: "dead-lettered updates need attention (npm run ops -- stats)" } : {})
            }]
          })
        }),
        ...(webhook.applicable ? { "telegram:webhook": [webhookCheck(report, nowMillis, time)] } : {}),
        "process:uptime": [{ observedValue: Math.round(process.uptime()), observedUnit: "s", status: "pass", time }],
        "process:memory": [{ observedValue: process.memoryUsage().rss, observedUnit: "bytes", status: "pass", time }]
      }
      return health({ status: worst(Object.values(checks).flatMap((list) => list.map((check) => check.status))), checks })
    })
  )
}))

const webhookCheck = (report: Option.Option<WebhookReport>, nowMillis: number, time: string): Check =>
  Option.match(report, {
    onNone: () => ({ status: "pass", time, output: "not checked yet" }),
    onSome: (r) => {
      const recentError = r.lastErrorDate !== undefined && nowMillis / 1000 - r.lastErrorDate < RECENT_WEBHOOK_ERROR_SECONDS
      const problems = [
        ...(r.urlIsOurs === false ? ["the registered webhook URL is not ours"] : []),
        ...(recentError ? [`Telegram reported: ${r.lastErrorMessage ?? "an error"}`] : []),
        ...(r.refreshError !== undefined ? [`getWebhookInfo failed: ${r.refreshError}`] : [])
      ]
      return {
        observedValue: {
          registered: r.registered,
          urlIsOurs: r.urlIsOurs,
          pendingUpdateCount: r.pendingUpdateCount,
          lastErrorDate: r.lastErrorDate ?? null,
          lastErrorMessage: r.lastErrorMessage === undefined ? null : redactUrls(r.lastErrorMessage)
        },
        status: problems.length > 0 ? "warn" : "pass",
        time: DateTime.formatIso(DateTime.makeUnsafe(r.checkedAt)),
        // The texts came from elsewhere (Telegram, an HTTP library): no URL leaves with them.
        ...(problems.length > 0 ? { output: redactUrls(problems.join("; ")) } : {})
      }
    }
  })
