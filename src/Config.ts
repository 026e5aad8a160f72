// Every environment variable the service and the ops CLI read, in one place, through Effect's
// Config module. A value that cannot be used fails with `InvalidConfig`: one line that names the
// variable and what it must be, never the value (it may be a secret).
import { Config, Context, Duration, Effect, Layer, type LogLevel, Option, Redacted, Schema } from "effect"
import { createHmac } from "node:crypto"

/** A configuration value that cannot be used. The message names the variable and never shows its value. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  variable: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `${this.variable}: ${this.reason}`
  }
}

/** How updates arrive, with the secrets each way needs. */
export type BotMode =
  | { readonly _tag: "webhook"; readonly token: Redacted.Redacted<string>; readonly secret: Redacted.Redacted<string> }
  | { readonly _tag: "polling"; readonly token: Redacted.Redacted<string> }
  | { readonly _tag: "sandbox" }

/** Where the database is: a URL, or the embedded PostgreSQL under `.data/`. */
export type DatabaseTarget =
  | { readonly _tag: "url"; readonly url: Redacted.Redacted<string> }
  | { readonly _tag: "embedded" }

/** Our `application_name` in pg_stat_activity and the pool's name in metrics. */
export const APPLICATION_NAME = "steadfast"

/** Connections kept out of the worker budget: LISTEN, the claim/sender loops, ingress and health. */
export const RESERVED_CONNECTIONS = 4

export class AppConfig extends Context.Service<AppConfig, {
  readonly mode: BotMode
  /** Checked on POST /webhook when set (required in webhook mode, optional in sandbox mode). */
  readonly webhookSecret: Option.Option<Redacted.Redacted<string>>
  readonly publicUrl: Option.Option<URL>
  readonly telegramApiRoot: string
  readonly database: DatabaseTarget
  readonly host: string
  readonly port: number
  readonly dbPoolMax: number
  readonly workerConcurrency: number
  readonly updateTimeout: Duration.Duration
  readonly maxAttempts: number
  readonly shutdownGrace: Duration.Duration
  readonly sendRatePerSecond: number
  /** Bot API calls in flight at once (they hold no database connection while waiting). */
  readonly senderConcurrency: number
  /** /health warns when the oldest unprocessed update is older than this. */
  readonly backlogWarnAge: Duration.Duration
  /** POST /webhook answers 503 while the inbox holds this many open (unprocessed) updates. */
  readonly maxOpenUpdates: number
  /** Key of the invoice payload HMAC: PAYMENT_SECRET, or one derived from the bot token. */
  readonly paymentSecret: Redacted.Redacted<string>
}>()("steadfast/Config") {
  static readonly layer = Layer.effect(AppConfig, Effect.suspend(() => load))
}

const MIN_PAYMENT_SECRET_LENGTH = 16
// Sandbox mode has no token and takes no real money: a fixed key is enough there.
const SANDBOX_PAYMENT_KEY = "steadfast-sandbox"

const SECRET_PATTERN = /^[A-Za-z0-9_-]{1,256}$/
const TOKEN_PATTERN = /^\d+:[A-Za-z0-9_-]+$/

/** One variable: unset or empty is `None`; a value `config` rejects is an `InvalidConfig` saying what it must be. */
const variable = <A>(name: string, config: Config.Config<A>, expected: string) =>
  Config.option(config).pipe(Effect.mapError(() => new InvalidConfig({ variable: name, reason: expected })))

/** Fails with `InvalidConfig` unless `check` holds for the value (when there is one). */
const ensure = <A>(name: string, check: (value: A) => boolean, reason: string) => (value: Option.Option<A>) =>
  Option.isSome(value) && !check(value.value) ? Effect.fail(new InvalidConfig({ variable: name, reason })) : Effect.succeed(value)

const integer = (name: string, fallback: number, min: number, max: number) =>
  variable(
    name,
    Config.schema(Schema.Int.check(Schema.isBetween({ minimum: min, maximum: max })), name),
    `must be an integer from ${min} to ${max}`
  )
    .pipe(Effect.map(Option.getOrElse(() => fallback)))

const secret = (name: string, pattern: RegExp, expected: string) =>
  variable(name, Config.Redacted(name), expected).pipe(
    Effect.flatMap(ensure(name, (value: Redacted.Redacted<string>) => pattern.test(Redacted.value(value)), expected))
  )

const httpUrl = (name: string) => {
  const expected = "must be an absolute http(s) URL"
  return variable(name, Config.URL(name), expected).pipe(
    Effect.flatMap(ensure(name, (url: URL) => url.protocol === "http:" || url.protocol === "https:", expected))
  )
}

/** A listening port; 0 picks a free one (tests). */
const port = (name: string) =>
  variable(
    name,
    Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), name),
    "must be an integer from 0 to 65535"
  )

/** `DATABASE_URL`: a postgres URL, `embedded` for the embedded PostgreSQL, or unset. */
export const databaseTarget: Effect.Effect<Option.Option<DatabaseTarget>, InvalidConfig> = variable(
  "DATABASE_URL",
  Config.Redacted("DATABASE_URL"),
  "cannot be read"
).pipe(Effect.flatMap((value) => {
  if (Option.isNone(value)) return Effect.succeedNone
  const text = Redacted.value(value.value).trim()
  if (text === "embedded") return Effect.succeedSome<DatabaseTarget>({ _tag: "embedded" })
  return URL.canParse(text) && /^postgres(ql)?:$/.test(new URL(text).protocol)
    ? Effect.succeedSome<DatabaseTarget>({ _tag: "url", url: value.value })
    : Effect.fail(new InvalidConfig({ variable: "DATABASE_URL", reason: "must be a postgres:// or postgresql:// URL, or embedded" }))
}))

/** Shortest WEBHOOK_SECRET accepted in webhook mode, and the length below which start-up warns. */
export const WEBHOOK_SECRET_MIN = 16
export const WEBHOOK_SECRET_GOOD = 32

const botMode = Effect.gen(function*() {
  const token = yield* secret("BOT_TOKEN", TOKEN_PATTERN, "is not a bot token (expected <digits>:<characters>)")
  const webhookSecret = yield* secret("WEBHOOK_SECRET", SECRET_PATTERN, "must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
  const chosen = yield* variable(
    "BOT_MODE",
    Config.Literals(["webhook", "polling", "sandbox"], "BOT_MODE"),
    "must be webhook, polling or sandbox"
  )
  const databaseSet = Option.isSome(yield* variable("DATABASE_URL", Config.String("DATABASE_URL"), "cannot be read"))
  // Sandbox mode is never a fallback for a token that did not arrive (a secret not mounted, an
  // empty `${BOT_TOKEN:-}`): with a DATABASE_URL that would answer real updates from the stand-in.
  const tag = Option.getOrElse(chosen, () => Option.isSome(token) || databaseSet ? "webhook" as const : "sandbox" as const)
  const mode = (): Effect.Effect<BotMode, InvalidConfig> => {
    if (tag === "sandbox") return Effect.succeed({ _tag: tag })
    if (Option.isNone(token)) {
      return Effect.fail(
        new InvalidConfig({
          variable: "BOT_TOKEN",
          reason: Option.isNone(chosen)
            ? "is missing or empty while DATABASE_URL is set (BOT_MODE=sandbox runs the local stand-in on purpose)"
            : `is required in ${tag} mode`
        })
      )
    }
    if (tag === "polling") return Effect.succeed({ _tag: tag, token: token.value })
    if (Option.isNone(webhookSecret)) {
      return Effect.fail(new InvalidConfig({ variable: "WEBHOOK_SECRET", reason: "is required in webhook mode" }))
    }
    // Anyone who can reach the port can try secrets: a short one can be guessed.
    if (Redacted.value(webhookSecret.value).length < WEBHOOK_SECRET_MIN) {
      return Effect.fail(
        new InvalidConfig({ variable: "WEBHOOK_SECRET", reason: `must be at least ${WEBHOOK_SECRET_MIN} characters in webhook mode` })
      )
    }
    return Effect.succeed({ _tag: tag, token: token.value, secret: webhookSecret.value })
  }
  return { mode: yield* mode(), token, webhookSecret }
})

const load = Effect.gen(function*() {
  const { mode, token, webhookSecret } = yield* botMode
  const publicUrl = yield* httpUrl("PUBLIC_URL")
  const telegramApiRoot = Option.match(yield* httpUrl("TELEGRAM_API_ROOT"), {
    onNone: () => "https://api.telegram.org",
    onSome: (url) => url.href.replace(/\/$/, "")
  })

  // Outside sandbox mode an embedded database is a choice (DATABASE_URL=embedded), never a fallback:
  // a production instance that silently kept its updates in a local folder would lose them.
  const databaseValue = yield* databaseTarget
  if (Option.isNone(databaseValue) && mode._tag !== "sandbox") {
    return yield* new InvalidConfig({
      variable: "DATABASE_URL",
      reason: `is required in ${mode._tag} mode (DATABASE_URL=embedded runs a local embedded PostgreSQL under .data/)`
    })
  }

  const host = Option.getOrElse(
    yield* variable("HOST", Config.String("HOST"), "cannot be read"),
    // Sandbox mode answers anyone who can reach it: by default only this machine can.
    () => mode._tag === "sandbox" ? "127.0.0.1" : "0.0.0.0"
  )
  const listenPort = Option.getOrElse(yield* port("PORT"), () => 8080)
  // Checked here too so a METRICS_PORT equal to PORT stops start-up before anything listens.
  yield* metricsListen
  const dbPoolMax = yield* integer("DB_POOL_MAX", 10, RESERVED_CONNECTIONS + 1, 1000)
  const workerBudget = dbPoolMax - RESERVED_CONNECTIONS
  const workerConcurrency = yield* integer("WORKER_CONCURRENCY", workerBudget, 1, 1000)
  if (workerConcurrency > workerBudget) {
    return yield* new InvalidConfig({
      variable: "WORKER_CONCURRENCY",
      reason:
        `must be at most DB_POOL_MAX - ${RESERVED_CONNECTIONS} = ${workerBudget}, so workers cannot starve the webhook and health checks`
    })
  }
  const updateTimeoutMs = yield* integer("UPDATE_TIMEOUT_MS", 10_000, 100, 600_000)
  const maxAttempts = yield* integer("MAX_ATTEMPTS", 5, 1, 100)
  // Short by default: handlers only touch the database, and Railway kills 3 s after SIGTERM unless told otherwise.
  const shutdownGraceMs = yield* integer("SHUTDOWN_GRACE_MS", 2_500, 0, 600_000)
  const sendRatePerSecond = yield* integer("SEND_RATE_PER_SECOND", 30, 1, 100_000)
  const senderConcurrency = yield* integer("SENDER_CONCURRENCY", 64, 1, 10_000)
  const backlogWarnSeconds = yield* integer("HEALTH_BACKLOG_WARN_SECONDS", 60, 1, 86_400)
  const maxOpenUpdates = yield* integer("MAX_OPEN_UPDATES", 100_000, 1, 100_000_000)

  const paymentSecretValue = yield* secret(
    "PAYMENT_SECRET",
    new RegExp(`^.{${MIN_PAYMENT_SECRET_LENGTH},}$`, "s"),
    `must be at least ${MIN_PAYMENT_SECRET_LENGTH} characters`
  )
  // Unset: a key derived from the bot token, so invoices stay verifiable across restarts with
  // no extra setting. The derivation is one-way: the payload MACs never reveal the token.
  const paymentSecret = Option.getOrElse(paymentSecretValue, () =>
    Redacted.make(
      createHmac("sha256", Option.match(token, { onNone: () => SANDBOX_PAYMENT_KEY, onSome: Redacted.value }))
        .update("steadfast/invoice-payload/v1")
        .digest("base64url")
    ))

  // Warned only once everything is valid, so a refused start still prints its one line.
  if (mode._tag === "webhook" && Redacted.value(mode.secret).length < WEBHOOK_SECRET_GOOD) {
    yield* Effect.logWarning(`WEBHOOK_SECRET is shorter than ${WEBHOOK_SECRET_GOOD} characters; a longer random secret is harder to guess`)
  }

  return AppConfig.of({
    mode,
    webhookSecret,
    publicUrl,
    telegramApiRoot,
    database: Option.getOrElse(databaseValue, (): DatabaseTarget => ({ _tag: "embedded" })),
    host,
    port: listenPort,
    dbPoolMax,
    workerConcurrency,
    updateTimeout: Duration.millis(updateTimeoutMs),
    maxAttempts,
    shutdownGrace: Duration.millis(shutdownGraceMs),
    sendRatePerSecond,
    senderConcurrency,
    backlogWarnAge: Duration.seconds(backlogWarnSeconds),
    maxOpenUpdates,
    paymentSecret
  })
})

// --- retention ---

const UNITS: Record<string, (n: number) => Duration.Duration> = {
  s: Duration.seconds,
  m: Duration.minutes,
  h: Duration.hours,
  d: Duration.days,
  w: Duration.weeks
}

/** Parses a period such as `7d`, `12h`, `30m`, `45s` or `2w`. */
export const parsePeriod = (text: string): Option.Option<Duration.Duration> => {
  const match = /^(\d{1,9})([smhdw])$/.exec(text.trim())
  const unit = match?.[2] === undefined ? undefined : UNITS[match[2]]
  return match === null || unit === undefined ? Option.none() : Option.some(unit(Number(match[1])))
}

/**
 * INBOX_RETENTION (`7d`, `36h`, `2w`), or none when unset. Below one day is refused: the inbox
 * row is what makes a redelivered update_id a no-op, and Telegram redelivers an update for up
 * to 24 hours.
 */
export const inboxRetention: Effect.Effect<Option.Option<Duration.Duration>, InvalidConfig> = variable(
  "INBOX_RETENTION",
  Config.String("INBOX_RETENTION"),
  "cannot be read"
).pipe(Effect.flatMap((value): Effect.Effect<Option.Option<Duration.Duration>, InvalidConfig> => {
  if (Option.isNone(value)) return Effect.succeedNone
  const period = parsePeriod(value.value)
  if (Option.isNone(period)) {
    return Effect.fail(
      new InvalidConfig({ variable: "INBOX_RETENTION", reason: `must be a number and s, m, h, d or w (7d, 36h, 2w), got "${value.value}"` })
    )
  }
  return Duration.isLessThan(period.value, Duration.days(1))
    ? Effect.fail(
      new InvalidConfig({
        variable: "INBOX_RETENTION",
        reason: "must be at least 1d: Telegram redelivers an update for up to 24 hours, and one whose row is gone would be handled again"
      })
    )
    : Effect.succeed(period)
}))

// --- observability ---

const LOG_LEVELS: Record<string, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  warning: "Warn",
  error: "Error",
  fatal: "Fatal"
}

export interface LogSettings {
  readonly level: LogLevel.LogLevel
  /** `None`: decided by whether stdout is a terminal. */
  readonly format: Option.Option<"json" | "pretty">
}

/** LOG_LEVEL (debug…fatal, any case; default info) and LOG_FORMAT (json or pretty). */
export const logSettings: Effect.Effect<LogSettings, InvalidConfig> = Effect.gen(function*() {
  const levelExpected = "must be one of trace, debug, info, warn, error, fatal"
  const level = yield* variable(
    "LOG_LEVEL",
    Config.String("LOG_LEVEL").pipe(Config.map((text) => text.trim().toLowerCase())),
    levelExpected
  )
    .pipe(Effect.flatMap(ensure("LOG_LEVEL", (text: string) => text in LOG_LEVELS, levelExpected)))
  const format = yield* variable("LOG_FORMAT", Config.Literals(["json", "pretty"], "LOG_FORMAT"), "must be json or pretty")
  return { level: Option.match(level, { onNone: () => "Info", onSome: (text) => LOG_LEVELS[text] ?? "Info" }), format }
})

/** METRICS_PORT: Prometheus `GET /metrics` on this port when set. */
export const metricsPort: Effect.Effect<Option.Option<number>, InvalidConfig> = port("METRICS_PORT")

export interface MetricsListen {
  readonly port: number
  readonly host: string
}

/**
 * Where `GET /metrics` listens, when METRICS_PORT is set: METRICS_HOST, else 127.0.0.1 (the
 * metrics have no authentication, so only this machine sees them unless asked). A METRICS_PORT
 * equal to PORT is refused: the second listener would die with EADDRINUSE.
 */
export const metricsListen: Effect.Effect<Option.Option<MetricsListen>, InvalidConfig> = Effect.gen(function*() {
  const metrics = yield* metricsPort
  if (Option.isNone(metrics)) return Option.none()
  const main = Option.getOrElse(yield* port("PORT"), () => 8080)
  if (metrics.value !== 0 && metrics.value === main) {
    return yield* new InvalidConfig({ variable: "METRICS_PORT", reason: `must differ from PORT (both are ${main})` })
  }
  const host = Option.getOrElse(yield* variable("METRICS_HOST", Config.String("METRICS_HOST"), "cannot be read"), () => "127.0.0.1")
  return Option.some({ port: metrics.value, host })
})

export interface TelemetrySettings {
  readonly traces: boolean
  readonly metrics: boolean
  readonly logs: boolean
  readonly serviceName: string
  readonly metricExportIntervalMs: number
  /** OTEL_BLRP_* (sdk-logs 0.223 ignores them, so they are passed to the log processor). */
  readonly logBatching: {
    readonly scheduledDelayMillis?: number
    readonly exportTimeoutMillis?: number
    readonly maxQueueSize?: number
    readonly maxExportBatchSize?: number
  }
}

// The OpenTelemetry specification asks SDKs to ignore an invalid OTEL_* value rather than fail,
// so these fall back to the default; the exporters read the rest (endpoints, headers, timeouts).
export const otel = (name: string) => Config.option(Config.NonEmptyString(name)).pipe(Effect.orElseSucceed(() => Option.none<string>()))
export const otelPositive = (name: string) =>
  Config.option(Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name)).pipe(Effect.orElseSucceed(() => Option.none<number>()))

/**
 * Which signals go out over OTLP: a signal is exported when an endpoint reaches it
 * (OTEL_EXPORTER_OTLP_ENDPOINT or its own) and its OTEL_<SIGNAL>_EXPORTER is not `none`;
 * OTEL_SDK_DISABLED=true turns all of them off.
 */
export const telemetrySettings: Effect.Effect<TelemetrySettings> = Effect.gen(function*() {
  const disabled = Option.getOrElse(yield* otel("OTEL_SDK_DISABLED"), () => "false") === "true"
  const anyEndpoint = Option.isSome(yield* otel("OTEL_EXPORTER_OTLP_ENDPOINT"))
  const enabled = (signal: "TRACES" | "METRICS" | "LOGS") =>
    Effect.gen(function*() {
      if (disabled || Option.getOrUndefined(yield* otel(`OTEL_${signal}_EXPORTER`)) === "none") return false
      return anyEndpoint || Option.isSome(yield* otel(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`))
    })
  const logBatching = {
    scheduledDelayMillis: yield* otelPositive("OTEL_BLRP_SCHEDULE_DELAY"),
    exportTimeoutMillis: yield* otelPositive("OTEL_BLRP_EXPORT_TIMEOUT"),
    maxQueueSize: yield* otelPositive("OTEL_BLRP_MAX_QUEUE_SIZE"),
    maxExportBatchSize: yield* otelPositive("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")
  }
  return {
    traces: yield* enabled("TRACES"),
    metrics: yield* enabled("METRICS"),
    logs: yield* enabled("LOGS"),
    serviceName: Option.getOrElse(yield* otel("OTEL_SERVICE_NAME"), () => APPLICATION_NAME),
    metricExportIntervalMs: Option.getOrElse(yield* otelPositive("OTEL_METRIC_EXPORT_INTERVAL"), () => 10_000),
    logBatching: Object.fromEntries(
      Object.entries(logBatching).flatMap(([key, value]) => Option.isSome(value) ? [[key, value.value]] : [])
    )
  }
})

// --- outbox retries ---

export interface OutboxSettings {
  /** A call that keeps failing transiently is given up (status expired) once it is this old. */
  readonly maxAge: Duration.Duration
  /** Longest wait between two delivery attempts of a call that failed transiently. */
  readonly retryMaxDelay: Duration.Duration
  /** /health's outbox:waiting warns when the oldest undelivered call is older than this. */
  readonly warnAge: Duration.Duration
}

/**
 * OUTBOX_MAX_AGE (a period: `1d`, `36h`, `30m`; default 1d, as long as Telegram redelivers an
 * update), OUTBOX_RETRY_MAX_MS (default 60000) and HEALTH_OUTBOX_WARN_SECONDS (default 300).
 */
/**
 * CALLBACK_QUERY_MAX_AGE_SECONDS (default 60, 0: never): a button press older than this when its
 * turn comes is finished as skipped without running. Telegram stops waiting for its answer long
 * before, and acting on a tap minutes late (after a backlog) does more harm than good.
 */
export const callbackQueryMaxAge: Effect.Effect<Duration.Duration, InvalidConfig> = Effect.map(
  integer("CALLBACK_QUERY_MAX_AGE_SECONDS", 60, 0, 86_400),
  Duration.seconds
)

export const outboxSettings: Effect.Effect<OutboxSettings, InvalidConfig> = Effect.gen(function*() {
  const maxAgeText = yield* variable("OUTBOX_MAX_AGE", Config.String("OUTBOX_MAX_AGE"), "cannot be read")
  const maxAge = Option.isNone(maxAgeText) ? Option.some(Duration.days(1)) : parsePeriod(maxAgeText.value)
  if (Option.isNone(maxAge)) {
    return yield* new InvalidConfig({ variable: "OUTBOX_MAX_AGE", reason: "must be a number and s, m, h, d or w (1d, 36h, 30m)" })
  }
  const retryMaxMs = yield* integer("OUTBOX_RETRY_MAX_MS", 60_000, 10, 3_600_000)
  const warnSeconds = yield* integer("HEALTH_OUTBOX_WARN_SECONDS", 300, 1, 86_400 * 7)
  return { maxAge: maxAge.value, retryMaxDelay: Duration.millis(retryMaxMs), warnAge: Duration.seconds(warnSeconds) }
})
