import { ByteSize, Effect, Metric, Option, Redacted, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { createHash, timingSafeEqual } from "node:crypto"
import { AppConfig } from "../Config.ts"
import { isDataError, refusalReason, storableUpdate } from "../db/Jsonb.ts"
import { Inbox } from "../queue/Inbox.ts"
import { OpenUpdates } from "../queue/OpenUpdates.ts"
import { Lifecycle } from "../Lifecycle.ts"
import * as Metrics from "../observability/Metrics.ts"
import { currentTraceparent } from "../observability/TraceContext.ts"
import { UpdateEnvelope, chatKeyOf, kindOf } from "../telegram/Update.ts"
import { repeatedWarning } from "../observability/RepeatedWarning.ts"

export const MAX_BODY_BYTES = 1024 * 1024
/** Seconds Telegram is asked to wait before redelivering after a 503. */
export const RETRY_AFTER_SECONDS = 5

const receivedByKind = Metrics.tagged(Metrics.updatesReceived)

const decodeEnvelope = Schema.decodeUnknownOption(UpdateEnvelope)

const answer = (status: number, description: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe({ ok: status === 200, description }, { status, headers })

const unavailable = (description: string) => answer(503, description, { "retry-after": String(RETRY_AFTER_SECONDS) })

const digest = (text: string) => createHash("sha256").update(text).digest()

/**
 * `POST /webhook`: validate, store in the inbox, answer. It never runs bot logic, so the answer
 * depends only on the insert: 200 once the row is committed, 503 with Retry-After if it cannot be
 * stored within the inbox's STORE_TIMEOUT (Telegram redelivers; nothing is lost).
 */
export const WebhookRoute = HttpRouter.use(Effect.fn(function*(router) {
  const config = yield* AppConfig
  const inbox = yield* Inbox
  const lifecycle = yield* Lifecycle
  const openUpdates = yield* OpenUpdates
  // Compared in time independent of where they differ (hashing first also hides the length).
  const secretDigest = Option.map(config.webhookSecret, (secret) => digest(Redacted.value(secret)))
  // While the database is away every delivery fails: one warning per interval, not one per request.
  const storeFailed = repeatedWarning("could not store updates; answering 503")

  yield* router.add(
    "POST",
    "/webhook",
    Effect.gen(function*() {
      // `connection: close` so a keep-alive client does not hold the draining server open.
      if (lifecycle.isDraining()) return answer(503, "shutting down", { "retry-after": String(RETRY_AFTER_SECONDS), connection: "close" })
      const request = yield* HttpServerRequest.HttpServerRequest
      if (Option.isSome(secretDigest)) {
        const given = request.headers["x-telegram-bot-api-secret-token"]
        if (given === undefined || !timingSafeEqual(digest(given), secretDigest.value)) {
          return answer(401, "missing or wrong secret token")
        }
      }
      // Shed before reading the body: past the cap Telegram keeps the update and slows down.
      if (openUpdates.full()) {
        yield* Metric.update(Metrics.webhookShed, 1)
        return unavailable(`${openUpdates.max} or more updates are open; retry later`)
      }
      const contentType = (request.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase()
      if (contentType !== "application/json") return answer(415, "content type must be application/json")
      const declaredLength = Number(request.headers["content-length"] ?? "0")
      if (declaredLength > MAX_BODY_BYTES) return answer(413, `body larger than ${MAX_BODY_BYTES} bytes`)

      const body = yield* request.text.pipe(
        Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(MAX_BODY_BYTES)),
        Effect.map((text) => ({ text })),
        Effect.catchTag("HttpServerError", (error) =>
          Effect.succeed(
            error.reason._tag === "RequestParseError" && error.reason.reason === "BodyTooLarge"
              ? answer(413, `body larger than ${MAX_BODY_BYTES} bytes`)
              : answer(400, "could not read the body")
          ))
      )
      if (!("text" in body)) return body
      const envelope = decodeEnvelope(body.text)
      if (Option.isNone(envelope)) return answer(400, "body must be a JSON object with a positive integer update_id")

      const update = envelope.value
      const updateId = update.update_id
      const kind = kindOf(update)
      // PROTOCOL: stored-before-200.
      const stored = yield* inbox.store({
        updateId,
        chatKey: chatKeyOf(update, kind),
        kind,
        ...storableUpdate(body.text, update),
        skipped: kind === "unknown",
        traceparent: yield* currentTraceparent
      }, { timed: true }).pipe(
        Effect.tap((inserted) => inserted ? Metric.update(receivedByKind({ "telegram.update.kind": kind }), 1) : Effect.void),
        Effect.as("stored" as const),
        Effect.catchTag("StoreTimeout", () => Effect.succeed("timeout" as const)),
        // Refused for its own data, it can never be stored: answering 503 would make Telegram
        // redeliver it for a day, holding up its chat. Everything else may pass: 503.
        Effect.catchTag("SqlError", (error) =>
          isDataError(error)
            ? Effect.as(
              Effect.logError(`update ${updateId} refused by PostgreSQL for its content (${refusalReason(error)}); answered 400`),
              "refused" as const
            )
            : Effect.fail(error)),
        Effect.tap(() => storeFailed.recovered),
        Effect.catchCause((cause) =>
          Effect.as(
            Effect.andThen(Effect.logDebug(`could not store update ${updateId}; answered 503`), storeFailed.warn(cause)),
            "failed" as const
          )
        )
      )
      if (stored === "refused") return answer(400, "the update cannot be stored")
      if (stored !== "stored") return unavailable("cannot store the update now; retry later")
      return answer(200, "stored")
    })
  )
}))
