import { Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash } from "node:crypto"
import { AppConfig } from "../Config.ts"
import { Database } from "../db/Database.ts"
import { decodeRows } from "../db/Rows.ts"
import { BotApi } from "./BotApi.ts"
import { ALLOWED_UPDATES } from "./Update.ts"

const SettingRow = Schema.Struct({ value: Schema.String })

/**
 * With PUBLIC_URL set, makes Telegram's webhook point at us. getWebhookInfo cannot show the
 * secret, so a fingerprint of (url, secret, allowed_updates) is kept in the database: the call
 * to setWebhook is made only when something really changed, e.g. a rotated WEBHOOK_SECRET.
 */
export const WebhookRegistration = {
  layer: Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const botApi = yield* BotApi
    const db = yield* Database
    const sql = db.sql
    if (Option.isNone(config.publicUrl)) return
    const url =
      new URL("webhook", config.publicUrl.value.href.endsWith("/") ? config.publicUrl.value : `${config.publicUrl.value.href}/`).href
    const secret = Option.map(config.webhookSecret, Redacted.value)
    const fingerprint = createHash("sha256")
      .update(JSON.stringify([url, Option.getOrElse(secret, () => ""), ALLOWED_UPDATES]))
      .digest("hex")

    const info = yield* botApi.getWebhookInfo()
    const stored = yield* db.withConnection(
      sql`SELECT value FROM settings WHERE key = 'webhook_fingerprint'`.pipe(decodeRows(SettingRow))
    )
    const sameAllowed = JSON.stringify([...(info.allowed_updates ?? [])].sort()) === JSON.stringify([...ALLOWED_UPDATES].sort())
    if (info.url === url && sameAllowed && stored[0]?.value === fingerprint) {
      return yield* Effect.logInfo("webhook already registered")
    }
    yield* botApi.setWebhook(url, {
      allowed_updates: [...ALLOWED_UPDATES],
      ...Option.match(secret, { onNone: () => ({}), onSome: (value) => ({ secret_token: value }) })
    })
    yield* db.withConnection(sql`
      INSERT INTO settings (key, value) VALUES ('webhook_fingerprint', ${fingerprint})
      ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
    yield* Effect.logInfo(`webhook registered at ${url}`)
  }))
}
