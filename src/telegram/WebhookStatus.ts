import { Clock, Context, Effect, Layer, Option, Schedule } from "effect"
import { AppConfig } from "../Config.ts"
import { BotApi } from "./BotApi.ts"
import { redactUrls } from "./RedactUrls.ts"

export interface WebhookReport {
  readonly checkedAt: number
  /** Whether Telegram's registered URL is ours (PUBLIC_URL + /webhook); null without PUBLIC_URL. The URL itself is not shown. */
  readonly urlIsOurs: boolean | null
  readonly registered: boolean
  readonly pendingUpdateCount: number
  readonly lastErrorDate: number | undefined
  readonly lastErrorMessage: string | undefined
  /** Set when the last refresh failed; the other fields are from the refresh before. */
  readonly refreshError: string | undefined
}

/** Often enough that /health shows a new delivery error or registration within seconds, one cheap call each time. */
export const REFRESH_EVERY = "5 seconds"

/**
 * Telegram's view of our webhook, refreshed by a background fiber so that health checks never
 * make a Bot API call. Only meaningful in webhook mode; elsewhere `report` is always none.
 */
export class WebhookStatus extends Context.Service<WebhookStatus, {
  readonly applicable: boolean
  readonly report: Effect.Effect<Option.Option<WebhookReport>>
}>()("steadfast/telegram/WebhookStatus") {
  static readonly layer = Layer.effect(
    WebhookStatus,
    Effect.gen(function*() {
      const config = yield* AppConfig
      if (config.mode._tag !== "webhook") return WebhookStatus.of({ applicable: false, report: Effect.succeedNone })
      const botApi = yield* BotApi
      const expectedUrl = Option.map(config.publicUrl, (base) => new URL("webhook", base.href.endsWith("/") ? base : `${base.href}/`).href)
      let latest: Option.Option<WebhookReport> = Option.none()

      const refresh = Effect.gen(function*() {
        const checkedAt = yield* Clock.currentTimeMillis
        const info = yield* Effect.result(botApi.getWebhookInfo())
        if (info._tag === "Failure") {
          latest = Option.some({
            ...Option.getOrElse(latest, () => ({
              urlIsOurs: null,
              registered: false,
              pendingUpdateCount: 0,
              lastErrorDate: undefined,
              lastErrorMessage: undefined
            })),
            checkedAt,
            refreshError: redactUrls(info.failure.message)
          })
          return
        }
        latest = Option.some({
          checkedAt,
          urlIsOurs: Option.match(expectedUrl, { onNone: () => null, onSome: (url) => info.success.url === url }),
          registered: info.success.url !== "",
          pendingUpdateCount: info.success.pending_update_count,
          lastErrorDate: info.success.last_error_date,
          lastErrorMessage: info.success.last_error_message === undefined ? undefined : redactUrls(info.success.last_error_message),
          refreshError: undefined
        })
      })
      yield* refresh.pipe(Effect.repeat(Schedule.spaced(REFRESH_EVERY)), Effect.forkScoped)
      return WebhookStatus.of({ applicable: true, report: Effect.sync(() => latest) })
    })
  )
}
