// The whole service in the test's own process, on a fresh database, talking to a Bot API
// stand-in over real HTTP: faster than a child process where signals are not the point.
import { ConfigProvider, Effect, Layer } from "effect"
import { HttpServer } from "effect/http"
import { makeAppLayer } from "../../src/App.ts"
import { Bot, type BotDefinition, type BotOptions } from "../../src/bot/Bot.ts"
import { BotApiRecorder } from "./BotApiRecorder.ts"

export const TEST_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
export const TEST_SECRET = "s3cret-webhook_token"

/** Environment for webhook mode against the stand-in; `overrides` win. */
export const testEnv = (databaseUrl: string, apiRoot: string, overrides: Record<string, string> = {}) => ({
  BOT_TOKEN: TEST_TOKEN,
  WEBHOOK_SECRET: TEST_SECRET,
  DATABASE_URL: databaseUrl,
  TELEGRAM_API_ROOT: apiRoot,
  HOST: "127.0.0.1",
  PORT: "0",
  ...overrides
})

/**
 * The app layer with its config read from `env` (plus the stand-in's URL), and optionally a
 * different handler set. Provides the stand-in too.
 */
export const testAppLayer = (options: {
  readonly databaseUrl: string
  readonly env?: Record<string, string>
  readonly handlers?: BotDefinition
  readonly botOptions?: BotOptions
}) =>
  Layer.unwrap(
    Effect.map(BotApiRecorder, (standIn) =>
      makeAppLayer(options.handlers === undefined ? {} : { bot: Bot.layerWith(options.handlers, options.botOptions) }).pipe(
        Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(options.databaseUrl, standIn.url, options.env))))
      ))
  ).pipe(Layer.provideMerge(BotApiRecorder.layer()))

/** Base URL of the app's HTTP server. */
export const baseUrl = Effect.map(
  HttpServer.HttpServer,
  (server) => server.address._tag === "UnixPathAddress" ? "" : `http://127.0.0.1:${server.address.port}`
)
