import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Clock, Console, Effect, Layer, Redacted } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import type { Bot } from "./bot/Bot.ts"
import { MyBot } from "./MyBot.ts"
import { AppConfig } from "./Config.ts"
import { Database } from "./db/Database.ts"
import { Instance } from "./queue/Instance.ts"
import { Notifications } from "./queue/Notifications.ts"
import { HealthRoutes } from "./http/HealthRoutes.ts"
import { HttpTracing, requestDuration } from "./http/HttpObservability.ts"
import { boundedServer, HTTP_LIMITS } from "./http/ListenerLimits.ts"
import { MetricsServer } from "./http/MetricsServer.ts"
import { Poller } from "./http/Poller.ts"
import { WebhookRoute } from "./http/WebhookRoute.ts"
import { Dispatcher } from "./queue/Dispatcher.ts"
import { Backlog } from "./queue/Backlog.ts"
import { Inbox } from "./queue/Inbox.ts"
import { OpenUpdates } from "./queue/OpenUpdates.ts"
import { Retention } from "./queue/Retention.ts"
import { Lifecycle } from "./Lifecycle.ts"
import { FiberDump } from "./observability/FiberDump.ts"
import { RuntimeMetrics } from "./observability/RuntimeMetrics.ts"
import { Outbox } from "./queue/Outbox.ts"
import { OutboxWaiting } from "./queue/OutboxWaiting.ts"
import { Sender } from "./queue/Sender.ts"
import { BotApiStandIn } from "./sandbox/BotApiStandIn.ts"
import { sampleUpdate } from "./sandbox/sampleUpdate.ts"
import { BotApi } from "./telegram/BotApi.ts"
import { SendRate } from "./telegram/SendRate.ts"
import { WebhookRegistration } from "./telegram/WebhookRegistration.ts"
import { WebhookStatus } from "./telegram/WebhookStatus.ts"

/** The Bot API: Telegram's (or TELEGRAM_API_ROOT's), or in sandbox mode a stand-in served by this process. */
const TelegramLayer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  if (config.mode._tag !== "sandbox") {
    return BotApi.layer({ token: config.mode.token, apiRoot: config.telegramApiRoot })
  }
  return Layer.unwrap(
    Effect.map(BotApiStandIn, (standIn) => BotApi.layer({ token: Redacted.make("1000000001:sandbox"), apiRoot: standIn.url }))
  ).pipe(
    Layer.provide(BotApiStandIn.layer({ logMessages: true }))
  )
}))

export { HTTP_LIMITS } from "./http/ListenerLimits.ts"

const makeHttpServer = () =>
  boundedServer({
    maxConnections: HTTP_LIMITS.maxConnections,
    maxConnectionsPerAddress: HTTP_LIMITS.maxConnectionsPerAddress
  })

const ServerLayer = Layer.unwrap(Effect.map(AppConfig, (config) =>
  NodeHttpServer.layer(makeHttpServer, {
    port: config.port,
    host: config.host,
    gracefulShutdownTimeout: config.shutdownGrace
  })))

/** Where updates come from besides POST /webhook. */
const IngressLayer = Layer.unwrap(Effect.map(AppConfig, (config): Layer.Layer<
  never,
  Layer.Error<ReturnType<typeof Poller.layer>> | Layer.Error<typeof WebhookRegistration.layer>,
  Layer.Services<ReturnType<typeof Poller.layer>> | Layer.Services<typeof WebhookRegistration.layer>
> => {
  switch (config.mode._tag) {
    case "polling":
      return Poller.layer(config.mode.token)
    case "webhook":
      return WebhookRegistration.layer
    case "sandbox":
      return Layer.empty
  }
}))

/**
 * `POST /webhook` is served only where updates arrive by webhook. In polling mode nothing
 * authenticates it (no secret is required there), so it does not exist: a forged update posted
 * to the port is a 404, never a stored update the bot would act on.
 */
const Routes = Layer.unwrap(
  Effect.map(AppConfig, (config) => config.mode._tag === "polling" ? HealthRoutes : Layer.mergeAll(WebhookRoute, HealthRoutes))
)

/** In sandbox mode: one line a newcomer can paste to see the bot answer. */
const SandboxBanner = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  if (config.mode._tag !== "sandbox") return
  const server = yield* HttpServer.HttpServer
  const port = server.address._tag === "UnixPathAddress" ? config.port : server.address.port
  const body = JSON.stringify(sampleUpdate({ updateId: Math.floor((yield* Clock.currentTimeMillis) / 1000), text: "Hello, steadfast!" }))
  yield* Console.log([
    "sandbox mode: no BOT_TOKEN, so the bot talks to a local Bot API stand-in and logs what it sends.",
    "post a sample update (change update_id to send another one):",
    `curl -X POST http://127.0.0.1:${port}/webhook -H 'content-type: application/json' -d '${body}'`
  ].join("\n"))
}))

const CoreLayer = Layer.mergeAll(
  Inbox.layer,
  Outbox.layer,
  Backlog.layer.pipe(Layer.provideMerge(OutboxWaiting.layer)),
  Notifications.layer,
  OpenUpdates.layer
).pipe(
  Layer.provideMerge(Instance.layer),
  Layer.provideMerge(Database.layer)
)

/**
 * The whole service. `bot` replaces the handler set (tests use it for failing handlers).
 * Shutdown runs in reverse: HTTP and workers drain first, then the pool, the Bot API, config.
 */
export const makeAppLayer = (options: { readonly bot?: ReturnType<typeof Bot.layerWith> } = {}) =>
  Layer.mergeAll(
    HttpRouter.serve(Routes, { disableLogger: true, middleware: requestDuration }).pipe(
      Layer.provide(HttpTracing)
    ),
    SandboxBanner
  ).pipe(
    Layer.provideMerge(ServerLayer),
    Layer.merge(Dispatcher.layer.pipe(Layer.provide(options.bot ?? MyBot.layer))),
    Layer.merge(Sender.layer),
    Layer.merge(Retention.layerConfig),
    Layer.merge(RuntimeMetrics.layer),
    Layer.merge(MetricsServer.layer),
    Layer.merge(IngressLayer),
    Layer.provideMerge(CoreLayer),
    Layer.provideMerge(SendRate.layer),
    Layer.provideMerge(WebhookStatus.layer),
    Layer.provideMerge(FiberDump.layer),
    Layer.provide(TelegramLayer),
    Layer.provide(Lifecycle.layer),
    Layer.provide(AppConfig.layer)
  )
