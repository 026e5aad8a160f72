import { Clock, DateTime, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Option } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { AppConfig, outboxSettings } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { Backlog } from "../queue/Backlog.ts"
import { Lifecycle } from "../Lifecycle.ts"
import { OutboxWaiting, type WaitingCalls } from "../queue/OutboxWaiting.ts"
import { describeFault } from "./HealthFault.ts"
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

/**
 * Each database check gets this long. Slower than that, readiness fails; a moment's contention (a
 * burst on a busy machine) is slower than the 80 ms a request may wait, but no outage.
 */
const CHECK_TIMEOUT = Duration.seconds(1)
/** The most a request waits for the database (for the very first probe only): /health answers within 100 ms. */
const ANSWER_WITHIN = Duration.millis(80)
/**
 * Requests within this long of a database probe share its answer, and a request that finds it
 * older starts the next probe in the background and answers with the last one: a burst of /health
 * requests (or a scraper polling every instance) costs at most one probe per second, nobody can
 * load the database through an unauthenticated route, and no answer waits for the database
 * (only the very first one, for at most ANSWER_WITHIN). An outage shows within two seconds.
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

/** A database check's answer and its time, or what went wrong in a few words. */
type Outcome<A> =
  | { readonly _tag: "answered"; readonly value: A; readonly elapsed: Duration.Duration }
  | { readonly _tag: "fault"; readonly output: string }

const fault = <A>(output: string): Outcome<A> => ({ _tag: "fault", output })
const answered = <A>(value: A, elapsed: Duration.Duration): Outcome<A> => ({ _tag: "answered", value, elapsed })

/**
 * Runs a database check under CHECK_TIMEOUT. The check runs in a fiber of its own that is
 * interrupted in the background: interrupting a query on a server that answers nothing waits for
 * a cancel request and a drain (seconds), and /health must not. A failure says what it saw
 * (connection refused, authentication failed, timed out), never a URL.
 */
const timed = <A, E, R>(check: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkDetach(Effect.timed(check))
    const exit = yield* Effect.timeoutOption(Fiber.await(fiber), CHECK_TIMEOUT)
    if (Option.isNone(exit)) {
      yield* Effect.forkDetach(Fiber.interrupt(fiber))
      return fault<A>(`timed out: no answer within ${Duration.toMillis(CHECK_TIMEOUT)} ms`)
    }
    return Exit.isSuccess(exit.value)
      ? answered(exit.value.value[1], exit.value.value[0])
      : fault<A>(describeFault(exit.value.cause))
  })

/**
 * `GET /health` (readiness, IETF "Health Check Response Format for HTTP APIs") and
 * `GET /health/live` (liveness: touches neither the database nor the network, so a database
 * outage never gets a healthy process restarted). Nothing here shows configuration or secrets.
 */
export const HealthRoutes = HttpRouter.use(Effect.fn(function*(router) {
  const config = yield* AppConfig
  const db = yield* Database
  const queueBacklog = yield* Backlog
  const lifecycle = yield* Lifecycle
  const webhook = yield* WebhookStatus
  const backlogWarnSeconds = Duration.toSeconds(config.backlogWarnAge)

  const outboxWaiting = yield* OutboxWaiting
  const outboxWarnSeconds = Duration.toSeconds((yield* outboxSettings).warnAge)

  yield* router.add("GET", "/health/live", Effect.sync(() => health({ status: "pass", checks: {} })))

  // Readiness is "can this instance take updates": a trivial statement on the probe's own
  // connection, which no burst of ingress, handlers or background work can take. The backlog
  // counts run beside it on a shared one; when they are slow (a large backlog, a busy pool) they
  // warn, and never take the instance out of the load balancer.
  const probeOnce = Effect.all({
    at: Clock.currentTimeMillis,
    ready: timed(db.withConnection(db.sql`SELECT 1`, CHECK_TIMEOUT, "probe")),
    backlog: timed(queueBacklog.read(CHECK_TIMEOUT))
  }, { concurrency: 2 })
  type Probed = Effect.Success<typeof probeOnce>
  let last: Probed | undefined
  // The probe in flight, shared by every request that needs it before it ends.
  let inflight: Deferred.Deferred<Probed> | undefined
  const fibers = yield* FiberSet.make()
  const start = Effect.gen(function*() {
    if (inflight !== undefined) return inflight
    const done = yield* Deferred.make<Probed>()
    inflight = done
    yield* FiberSet.run(
      fibers,
      Effect.flatMap(probeOnce, (probed) =>
        Effect.andThen(
          Effect.sync(() => {
            last = probed
            inflight = undefined
          }),
          Deferred.succeed(done, probed)
        ))
    )
    return done
  })
  const probe = Effect.gen(function*() {
    if (last === undefined) {
      const first = yield* Effect.timeoutOption(Deferred.await(yield* start), ANSWER_WITHIN)
      if (Option.isSome(first)) return first.value
      const pending = fault<never>(`no answer within ${Duration.toMillis(ANSWER_WITHIN)} ms yet`)
      return { at: yield* Clock.currentTimeMillis, ready: pending, backlog: pending }
    }
    if ((yield* Clock.currentTimeMillis) - last.at >= Duration.toMillis(PROBE_TTL)) yield* start
    return last
  })

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
      const backlog = probed.backlog

      const checks: Record<string, ReadonlyArray<Check>> = {
        "postgres:responseTime": [
          probed.ready._tag === "fault"
            ? { status: "fail" as const, time: probedAt, output: `PostgreSQL: ${probed.ready.output}` }
            : { observedValue: Duration.toMillis(probed.ready.elapsed), observedUnit: "ms", status: "pass" as const, time: probedAt }
        ],
        "postgres:connections": [{
          observedValue: { used: pool.used, idle: pool.idle, max: pool.max, pending: pool.pending },
          status: pool.pending > 0 ? "warn" : "pass",
          time
        }],
        ...(backlog._tag === "fault"
          ? {
            "inbox:backlog": [{ status: "warn" as const, time: probedAt, output: `inbox not counted: ${backlog.output}` }],
            "inbox:dead": [{ status: "warn" as const, time: probedAt, output: `inbox not counted: ${backlog.output}` }]
          }
          : {
            "inbox:backlog": [{
              observedValue: {
                pending: backlog.value.pending,
                oldestSeconds: Math.round(backlog.value.oldestSeconds),
                outboxPending: backlog.value.outbox
              },
              status: backlog.value.oldestSeconds > backlogWarnSeconds ? "warn" as const : "pass" as const,
              time: probedAt,
              ...(backlog.value.oldestSeconds > backlogWarnSeconds
                ? { output: `oldest pending update is over ${backlogWarnSeconds} s old` }
                : {})
            }],
            "inbox:dead": [{
              observedValue: backlog.value.dead,
              status: backlog.value.dead > 0 ? "warn" as const : "pass" as const,
              time: probedAt,
              ...(backlog.value.dead > 0 ? { output: "dead-lettered updates need attention (npm run ops -- stats)" } : {})
            }]
          }),
        "outbox:waiting": [outboxWaitingCheck(yield* outboxWaiting.latest, outboxWarnSeconds, time)],
        ...(webhook.applicable ? { "telegram:webhook": [webhookCheck(report, nowMillis, time)] } : {}),
        "process:uptime": [{ observedValue: Math.round(process.uptime()), observedUnit: "s", status: "pass", time }],
        "process:memory": [{ observedValue: process.memoryUsage().rss, observedUnit: "bytes", status: "pass", time }]
      }
      return health({ status: worst(Object.values(checks).flatMap((list) => list.map((check) => check.status))), checks })
    })
  )
}))

/**
 * Calls not yet delivered, from the samplers' last look (no query here): warns while the oldest is
 * older than HEALTH_OUTBOX_WARN_SECONDS, such as during a Telegram or network outage. A warning,
 * not a failure: the instance still takes updates, and the calls go out once Telegram is back.
 */
const outboxWaitingCheck = (latest: Option.Option<WaitingCalls>, warnSeconds: number, time: string): Check =>
  Option.match(latest, {
    onNone: () => ({ status: "pass", time, output: "not sampled yet" }),
    onSome: (waiting) => {
      const late = waiting.oldestSeconds > warnSeconds
      return {
        observedValue: { open: waiting.open, retrying: waiting.retrying, oldestSeconds: Math.round(waiting.oldestSeconds) },
        status: late ? "warn" : "pass",
        time: DateTime.formatIso(DateTime.makeUnsafe(waiting.at)),
        ...(late ? { output: `oldest undelivered Bot API call is over ${warnSeconds} s old (npm run ops -- list --calls)` } : {})
      }
    }
  })

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
