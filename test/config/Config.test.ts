import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Deferred, Effect, Logger, Option, Redacted } from "effect"
import { AppConfig } from "../../src/Config.ts"
import { type ServiceProcessError, spawnService } from "../support/ServiceProcess.ts"

// Distinctive values: finding any of them in the output cannot be a coincidence.
const TOKEN = "918273645:ZZtokenValueThatMustNeverBePrinted_q9"
const SECRET = "secretThatMustNeverBePrinted_w4"
const DB_PASSWORD = "dbPasswordThatMustNeverBePrinted"
const NEVER_PRINTED = [TOKEN, TOKEN.split(":")[1]!, SECRET, DB_PASSWORD]

/**
 * A valid webhook-mode environment. Its DATABASE_URL points at a closed port, so a variable
 * that wrongly passed validation ends in a connection failure (a multi-line fatal log), not in
 * a running service, and never in an embedded database under .data/.
 */
const validEnv: Record<string, string> = {
  BOT_TOKEN: TOKEN,
  WEBHOOK_SECRET: SECRET,
  DATABASE_URL: `postgres://steadfast:${DB_PASSWORD}@127.0.0.1:1/steadfast`,
  TELEGRAM_API_ROOT: "http://127.0.0.1:1"
}

/** `validEnv` with `changes` applied; `undefined` removes a variable. */
const envWith = (changes: Record<string, string | undefined>): Record<string, string> =>
  Object.fromEntries(
    Object.entries({ ...validEnv, ...changes }).filter((entry): entry is [string, string] => entry[1] !== undefined)
  )

/** Runs `node src/main.ts` with the environment and returns its exit code and everything it printed. */
const runService = (changes: Record<string, string | undefined>): Effect.Effect<Run, ServiceProcessError> =>
  Effect.scoped(Effect.gen(function*() {
    const service = yield* spawnService(envWith(changes), { waitForListening: false })
    // Generous: on a loaded machine just loading the modules can take many seconds.
    const exit = yield* Effect.timeoutOption(service.exited, "50 seconds")
    return { code: Option.match(exit, { onNone: () => null, onSome: (e) => e.code }), output: yield* service.output }
  }))

interface Run {
  readonly code: number | null
  readonly output: string
}

const assertRefused = (
  result: Run,
  variable: string,
  alsoNeverPrinted: ReadonlyArray<string> = []
) => {
  assert.strictEqual(result.code, 1, result.output)
  const lines = result.output.split("\n").filter((line) => line.trim() !== "")
  assert.strictEqual(lines.length, 1, `expected exactly one line, got:\n${result.output}`)
  assert.match(lines[0]!, new RegExp(`\\b${variable}\\b`))
  assert.notMatch(result.output, /^\s+at /m, "no stack trace")
  for (const value of [...NEVER_PRINTED, ...alsoNeverPrinted]) assert.notInclude(result.output, value)
}

/** Loads the configuration in-process, for variants of a rule the process tests already cover end to end. */
const loadConfig = (changes: Record<string, string | undefined>) =>
  Effect.gen(function*() {
    return yield* AppConfig
  }).pipe(
    Effect.provide(AppConfig.layer),
    Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(envWith(changes))))
  )

const configError = (changes: Record<string, string | undefined>) => Effect.flip(loadConfig(changes))

const assertInvalid = (error: { readonly variable: string; readonly message: string }, variable: string) => {
  assert.strictEqual(error.variable, variable)
  for (const value of NEVER_PRINTED) assert.notInclude(error.message, value)
}

const MALFORMED_SECRET = "has space! zq7MalformedSecretValue"

interface ProcessCase {
  /** The test's name: what is wrong with the environment. */
  readonly name: string
  readonly changes: Record<string, string | undefined>
  /** The variable the one line must name. */
  readonly variable: string
  readonly alsoNeverPrinted?: ReadonlyArray<string>
}

const processCases: ReadonlyArray<ProcessCase> = [
  { name: "PORT=99999", changes: { PORT: "99999" }, variable: "PORT" },
  { name: "PORT=abc", changes: { PORT: "abc" }, variable: "PORT" },
  {
    name: "a WEBHOOK_SECRET with a space and a '!' (its value is not printed)",
    changes: { WEBHOOK_SECRET: MALFORMED_SECRET },
    variable: "WEBHOOK_SECRET",
    alsoNeverPrinted: [MALFORMED_SECRET, "zq7MalformedSecretValue"]
  },
  { name: "an unparsable PUBLIC_URL", changes: { PUBLIC_URL: "not a url" }, variable: "PUBLIC_URL" },
  {
    name: "a DATABASE_URL that is not a postgres URL (its password is not printed)",
    changes: { DATABASE_URL: `mysql://steadfast:${DB_PASSWORD}@127.0.0.1:1/steadfast` },
    variable: "DATABASE_URL"
  },
  {
    name: "BOT_TOKEN without WEBHOOK_SECRET in webhook mode (the token is not printed)",
    changes: { WEBHOOK_SECRET: undefined },
    variable: "WEBHOOK_SECRET"
  },
  {
    name: "a real BOT_TOKEN with no DATABASE_URL (no silent embedded database in production)",
    changes: { DATABASE_URL: undefined },
    variable: "DATABASE_URL"
  },
  {
    name: "no BOT_TOKEN with a DATABASE_URL: never a silent sandbox against the real database",
    changes: { BOT_TOKEN: undefined },
    variable: "BOT_TOKEN",
    alsoNeverPrinted: ["sandbox mode: no BOT_TOKEN", "Listening on"]
  },
  {
    name: "an empty BOT_TOKEN (a secret that arrived empty) with a DATABASE_URL",
    changes: { BOT_TOKEN: "" },
    variable: "BOT_TOKEN",
    alsoNeverPrinted: ["sandbox mode: no BOT_TOKEN", "Listening on"]
  },
  {
    name: "a WEBHOOK_SECRET of 15 characters in webhook mode (its value is not printed)",
    changes: { WEBHOOK_SECRET: "short_Secret_15" },
    variable: "WEBHOOK_SECRET",
    alsoNeverPrinted: ["short_Secret_15"]
  },
  {
    name: "METRICS_PORT equal to PORT",
    changes: { PORT: "18471", METRICS_PORT: "18471" },
    variable: "METRICS_PORT"
  },
  { name: "LOG_LEVEL=verbose", changes: { LOG_LEVEL: "verbose" }, variable: "LOG_LEVEL" },
  {
    name: "WORKER_CONCURRENCY greater than DB_POOL_MAX - 4",
    changes: { DB_POOL_MAX: "10", WORKER_CONCURRENCY: "7" },
    variable: "WORKER_CONCURRENCY"
  }
]

// Each case is a real process, about 1.5 s of CPU spent mostly loading modules. On first use
// they are all started, two at a time (one per core: more only compete for the CPU and risk
// their timeouts on a busy machine), and each test awaits its own.
const results = new Map(processCases.map((c) => [c, Deferred.makeUnsafe<Run, ServiceProcessError>()]))
const startAll = Effect.runSync(Effect.cached(Effect.forkDetach(
  Effect.forEach(processCases, (c) => Effect.flatMap(Effect.exit(runService(c.changes)), (exit) => Deferred.done(results.get(c)!, exit)), {
    concurrency: 2,
    discard: true
  })
)))
const resultOf = (c: ProcessCase) => Effect.andThen(startAll, Deferred.await(results.get(c)!))

describe("invalid configuration stops the process: exit 1, one line naming the variable, no stack, no secret", () => {
  for (const c of processCases) {
    it.live(c.name, () => Effect.map(resultOf(c), (run) => assertRefused(run, c.variable, c.alsoNeverPrinted)))
  }
})

describe("configuration rules", () => {
  it.effect("PORT accepts 0-65535 only", () =>
    Effect.gen(function*() {
      for (const port of ["-1", "65536", "80.5", "8080abc"]) assertInvalid(yield* configError({ PORT: port }), "PORT")
      const ok = yield* loadConfig({ PORT: "65535" })
      assert.strictEqual(ok.port, 65535)
    }))

  it.effect("WEBHOOK_SECRET must be 1-256 of A-Z a-z 0-9 _ -", () =>
    Effect.gen(function*() {
      for (const secret of ["äöü", "a/b", "x".repeat(257)]) {
        const error = yield* configError({ WEBHOOK_SECRET: secret })
        assertInvalid(error, "WEBHOOK_SECRET")
        assert.notInclude(error.message, secret)
      }
    }))

  it.effect("PUBLIC_URL and DATABASE_URL must use their schemes", () =>
    Effect.gen(function*() {
      assertInvalid(yield* configError({ PUBLIC_URL: "ftp://bot.example.com" }), "PUBLIC_URL")
      assertInvalid(yield* configError({ DATABASE_URL: `steadfast:${DB_PASSWORD} at localhost` }), "DATABASE_URL")
    }))

  it.effect("explicit BOT_MODE=webhook also requires WEBHOOK_SECRET, polling does not", () =>
    Effect.gen(function*() {
      assertInvalid(yield* configError({ WEBHOOK_SECRET: undefined, BOT_MODE: "webhook" }), "WEBHOOK_SECRET")
      const polling = yield* loadConfig({ WEBHOOK_SECRET: undefined, BOT_MODE: "polling" })
      assert.strictEqual(polling.mode._tag, "polling")
    }))

  it.effect("DATABASE_URL=embedded asks for the embedded PostgreSQL in any mode; sandbox mode falls back to it", () =>
    Effect.gen(function*() {
      const webhook = yield* loadConfig({ DATABASE_URL: "embedded" })
      assert.strictEqual(webhook.database._tag, "embedded")
      const sandbox = yield* loadConfig({ BOT_TOKEN: undefined, WEBHOOK_SECRET: undefined, DATABASE_URL: undefined })
      assert.strictEqual(sandbox.mode._tag, "sandbox")
      assert.strictEqual(sandbox.database._tag, "embedded")
      const url = yield* loadConfig({})
      assert.strictEqual(url.database._tag, "url")
    }))

  it.effect("the mode carries its secrets: webhook its token and secret, polling its token", () =>
    Effect.gen(function*() {
      const webhook = yield* loadConfig({})
      assert.strictEqual(webhook.mode._tag, "webhook")
      if (webhook.mode._tag === "webhook") {
        assert.strictEqual(Redacted.value(webhook.mode.token), TOKEN)
        assert.strictEqual(Redacted.value(webhook.mode.secret), SECRET)
      }
      const polling = yield* loadConfig({ BOT_MODE: "polling", WEBHOOK_SECRET: undefined })
      assert.strictEqual(polling.mode._tag === "polling" ? Redacted.value(polling.mode.token) : undefined, TOKEN)
    }))

  it.effect("HOST defaults to 127.0.0.1 in sandbox mode and 0.0.0.0 otherwise", () =>
    Effect.gen(function*() {
      const sandbox = { BOT_MODE: "sandbox", BOT_TOKEN: undefined, WEBHOOK_SECRET: undefined }
      assert.strictEqual((yield* loadConfig(sandbox)).host, "127.0.0.1")
      assert.strictEqual((yield* loadConfig({ ...sandbox, HOST: "0.0.0.0" })).host, "0.0.0.0")
      assert.strictEqual((yield* loadConfig({})).host, "0.0.0.0")
    }))

  it.effect("sandbox mode only when asked for or with no DATABASE_URL; a missing or empty token otherwise refuses", () =>
    Effect.gen(function*() {
      const embedded = yield* loadConfig({ BOT_TOKEN: undefined, WEBHOOK_SECRET: undefined, DATABASE_URL: undefined })
      assert.strictEqual(embedded.mode._tag, "sandbox")
      const asked = yield* loadConfig({ BOT_MODE: "sandbox", BOT_TOKEN: undefined, WEBHOOK_SECRET: undefined })
      assert.strictEqual(asked.mode._tag, "sandbox")
      assert.strictEqual(asked.database._tag, "url")
      for (const token of [undefined, ""]) {
        const error = yield* configError({ BOT_TOKEN: token, WEBHOOK_SECRET: undefined })
        assertInvalid(error, "BOT_TOKEN")
        assert.include(error.message, "DATABASE_URL")
      }
      assertInvalid(yield* configError({ BOT_TOKEN: "", DATABASE_URL: "embedded" }), "BOT_TOKEN")
      assertInvalid(yield* configError({ BOT_MODE: "polling", BOT_TOKEN: undefined }), "BOT_TOKEN")
    }))

  it.effect("WEBHOOK_SECRET: at least 16 characters in webhook mode, any length in sandbox mode", () =>
    Effect.gen(function*() {
      assertInvalid(yield* configError({ WEBHOOK_SECRET: "a" }), "WEBHOOK_SECRET")
      assertInvalid(yield* configError({ WEBHOOK_SECRET: "x".repeat(15) }), "WEBHOOK_SECRET")
      const sixteen = yield* loadConfig({ WEBHOOK_SECRET: "x".repeat(16) })
      assert.strictEqual(sixteen.mode._tag, "webhook")
      const sandbox = yield* loadConfig({ BOT_MODE: "sandbox", WEBHOOK_SECRET: "a" })
      assert.strictEqual(sandbox.mode._tag, "sandbox")
    }))

  it.effect("a WEBHOOK_SECRET shorter than 32 characters starts with a warning that does not show it", () =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
        logs.push(`${logLevel} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
      })
      const short = "x".repeat(20)
      yield* loadConfig({ WEBHOOK_SECRET: short }).pipe(Effect.provide(Logger.layer([capture])))
      assert.isTrue(logs.some((line) => line.startsWith("Warn") && line.includes("WEBHOOK_SECRET")), logs.join("\n"))
      assert.isFalse(logs.some((line) => line.includes(short)))
      logs.length = 0
      yield* loadConfig({ WEBHOOK_SECRET: "x".repeat(32) }).pipe(Effect.provide(Logger.layer([capture])))
      assert.deepStrictEqual(logs, [])
    }))

  it.effect("WORKER_CONCURRENCY may use all of DB_POOL_MAX - 4, not more", () =>
    Effect.gen(function*() {
      const ok = yield* loadConfig({ DB_POOL_MAX: "10", WORKER_CONCURRENCY: "6" })
      assert.strictEqual(ok.workerConcurrency, 6)
      assertInvalid(yield* configError({ DB_POOL_MAX: "20", WORKER_CONCURRENCY: "17" }), "WORKER_CONCURRENCY")
    }))
})
