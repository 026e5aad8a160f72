import { Config, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
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

export type BotMode = "webhook" | "polling" | "sandbox"

/** Our `application_name` in pg_stat_activity and the pool's name in metrics. */
export const APPLICATION_NAME = "steadfast"

/** Connections kept out of the worker budget: LISTEN, the claim/sender loops, ingress and health. */
export const RESERVED_CONNECTIONS = 4

export class AppConfig extends Context.Service<AppConfig, {
  readonly mode: BotMode
  readonly botToken: Option.Option<Redacted.Redacted<string>>
  readonly webhookSecret: Option.Option<Redacted.Redacted<string>>
  readonly publicUrl: Option.Option<URL>
  readonly telegramApiRoot: string
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
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

// Every variable is read as a plain optional string and checked here, so that an
// error message is ours: it names the variable and never echoes a secret's value.
const raw = (name: string) =>
  Config.option(Config.String(name)).pipe(
    Effect.map(Option.filter((value) => value.trim() !== "")),
    Effect.mapError((error) => new InvalidConfig({ variable: name, reason: `cannot be read (${error.message})` }))
  )

const integer = (name: string, fallback: number, min: number, max: number) =>
  Effect.flatMap(raw(name), (value) => {
    if (Option.isNone(value)) return Effect.succeed(fallback)
    const parsed = Number(value.value)
    return Number.isInteger(parsed) && parsed >= min && parsed <= max
      ? Effect.succeed(parsed)
      : Effect.fail(new InvalidConfig({ variable: name, reason: `must be an integer from ${min} to ${max}, got "${value.value}"` }))
  })

const url = (name: string, value: string) =>
  Effect.try({
    try: () => {
      const parsed = new URL(value)
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new Error("not http(s)")
      return parsed
    },
    catch: () => new InvalidConfig({ variable: name, reason: "must be an absolute http(s) URL" })
  })

const load = Effect.gen(function*() {
  const token = yield* raw("BOT_TOKEN")
  if (Option.isSome(token) && !TOKEN_PATTERN.test(token.value)) {
    return yield* new InvalidConfig({ variable: "BOT_TOKEN", reason: "is not a bot token (expected <digits>:<characters>)" })
  }
  const modeValue = yield* raw("BOT_MODE")
  const mode: BotMode = Option.isNone(modeValue)
    ? (Option.isSome(token) ? "webhook" : "sandbox")
    : yield* parseMode(modeValue.value)
  if (mode !== "sandbox" && Option.isNone(token)) {
    return yield* new InvalidConfig({ variable: "BOT_TOKEN", reason: `is required in ${mode} mode` })
  }

  const secret = yield* raw("WEBHOOK_SECRET")
  if (Option.isSome(secret) && !SECRET_PATTERN.test(secret.value)) {
    return yield* new InvalidConfig({ variable: "WEBHOOK_SECRET", reason: "must be 1-256 characters of A-Z, a-z, 0-9, _ and -" })
  }
  if (mode === "webhook" && Option.isNone(secret)) {
    return yield* new InvalidConfig({ variable: "WEBHOOK_SECRET", reason: "is required in webhook mode" })
  }

  const publicUrlValue = yield* raw("PUBLIC_URL")
  const publicUrl = Option.isSome(publicUrlValue)
    ? Option.some(yield* url("PUBLIC_URL", publicUrlValue.value))
    : Option.none()
  const apiRootValue = yield* raw("TELEGRAM_API_ROOT")
  const telegramApiRoot = Option.isSome(apiRootValue)
    ? (yield* url("TELEGRAM_API_ROOT", apiRootValue.value)).href.replace(/\/$/, "")
    : "https://api.telegram.org"

  const databaseValue = yield* raw("DATABASE_URL")
  if (Option.isSome(databaseValue)) {
    const ok = yield* Effect.try({ try: () => new URL(databaseValue.value), catch: () => undefined }).pipe(
      Effect.map((parsed) => parsed.protocol === "postgres:" || parsed.protocol === "postgresql:"),
      Effect.orElseSucceed(() => false)
    )
    if (!ok) {
      return yield* new InvalidConfig({ variable: "DATABASE_URL", reason: "must be a postgres:// or postgresql:// URL" })
    }
  }

  const hostValue = yield* raw("HOST")
  const port = yield* integer("PORT", 8080, 0, 65535)
  const dbPoolMax = yield* integer("DB_POOL_MAX", 10, RESERVED_CONNECTIONS + 1, 1000)
  const workerBudget = dbPoolMax - RESERVED_CONNECTIONS
  const workerConcurrency = yield* integer("WORKER_CONCURRENCY", workerBudget, 1, 1000)
  if (workerConcurrency > workerBudget) {
    return yield* new InvalidConfig({
      variable: "WORKER_CONCURRENCY",
      reason: `must be at most DB_POOL_MAX - ${RESERVED_CONNECTIONS} = ${workerBudget}, so workers cannot starve the webhook and health checks`
    })
  }
  const updateTimeoutMs = yield* integer("UPDATE_TIMEOUT_MS", 10_000, 100, 600_000)
  const maxAttempts = yield* integer("MAX_ATTEMPTS", 5, 1, 100)
  // Short by default: handlers only touch the database, and Railway kills 3 s after SIGTERM unless told otherwise.
  const shutdownGraceMs = yield* integer("SHUTDOWN_GRACE_MS", 2_500, 0, 600_000)
  const sendRatePerSecond = yield* integer("SEND_RATE_PER_SECOND", 30, 1, 100_000)
  const senderConcurrency = yield* integer("SENDER_CONCURRENCY", 64, 1, 10_000)
  const backlogWarnSeconds = yield* integer("HEALTH_BACKLOG_WARN_SECONDS", 60, 1, 86_400)

  const paymentSecretValue = yield* raw("PAYMENT_SECRET")
  if (Option.isSome(paymentSecretValue) && paymentSecretValue.value.length < MIN_PAYMENT_SECRET_LENGTH) {
    return yield* new InvalidConfig({ variable: "PAYMENT_SECRET", reason: `must be at least ${MIN_PAYMENT_SECRET_LENGTH} characters` })
  }
  // Unset: a key derived from the bot token, so invoices stay verifiable across restarts with
  // no extra setting. The derivation is one-way: the payload MACs never reveal the token.
  const paymentSecret = Option.getOrElse(paymentSecretValue, () =>
    createHmac("sha256", Option.getOrElse(token, () => SANDBOX_PAYMENT_KEY)).update("steadfast/invoice-payload/v1").digest("base64url"))

  return AppConfig.of({
    mode,
    botToken: Option.map(token, Redacted.make),
    webhookSecret: Option.map(secret, Redacted.make),
    publicUrl,
    telegramApiRoot,
    databaseUrl: Option.map(databaseValue, Redacted.make),
    host: Option.getOrElse(hostValue, () => "0.0.0.0"),
    port,
    dbPoolMax,
    workerConcurrency,
    updateTimeout: Duration.millis(updateTimeoutMs),
    maxAttempts,
    shutdownGrace: Duration.millis(shutdownGraceMs),
    sendRatePerSecond,
    senderConcurrency,
    backlogWarnAge: Duration.seconds(backlogWarnSeconds),
    paymentSecret: Redacted.make(paymentSecret)
  })
})

const parseMode = (value: string) =>
  value === "webhook" || value === "polling" || value === "sandbox"
    ? Effect.succeed<BotMode>(value)
    : Effect.fail(new InvalidConfig({ variable: "BOT_MODE", reason: `must be webhook, polling or sandbox, got "${value}"` }))
