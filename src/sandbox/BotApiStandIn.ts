import type { Message, UserFromGetMe, WebhookInfo } from "grammy/types"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Clock, Context, Effect, FiberSet, Layer, Option, Ref, Schema } from "effect"

/** One Bot API request as the stand-in received it: the token is never part of it. */
export interface IncomingCall {
  readonly method: string
  /** The request's parameters; undefined when its body could not be parsed. */
  readonly params: Record<string, unknown> | undefined
  readonly at: number
}

/** An HTTP answer: a Telegram result or error object, or a raw string (a proxy's HTML error page). */
export interface Answer {
  readonly status: number
  readonly body: unknown
}

/**
 * How calls are answered. Sandbox mode answers every call from the stand-in's model of the Bot
 * API; the tests' recorder (test/support/BotApiRecorder.ts) wraps that model to record, script
 * and delay answers, so the tests exercise the very server sandbox mode runs.
 */
export interface Responder {
  /** The answer to `call`; `model` is the sandbox's own. Interrupted when the client hangs up first. */
  readonly respond: (call: IncomingCall, model: Effect.Effect<Answer>) => Effect.Effect<Answer>
  /** Runs when the client hangs up before its answer was sent. */
  readonly hungUp: (call: IncomingCall) => Effect.Effect<void>
}

export class StandInListenError extends Schema.TaggedError<StandInListenError>()("StandInListenError", {
  port: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `Bot API stand-in could not listen on 127.0.0.1:${this.port}: ${this.reason}`
  }
}

const JsonParams = Schema.fromJsonString(Schema.Record(Schema.String, Schema.Unknown))
const decodeJsonParams = Schema.decodeUnknownOption(JsonParams)

const descriptions: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  429: "Too Many Requests: retry after 1",
  500: "Internal Server Error",
  502: "Bad Gateway"
}

/** A Telegram error object for `status`, with the description Telegram gives it. */
export const telegramError = (status: number, description?: string): Answer => ({
  status,
  body: {
    ok: false,
    error_code: status,
    description: description ?? descriptions[status] ?? `Error ${status}`,
    ...(status === 429 && description === undefined ? { parameters: { retry_after: 1 } } : {})
  }
})

const ok = (result: unknown): Answer => ({ status: 200, body: { ok: true, result } })
const badRequest = (detail: string): Answer => telegramError(400, `Bad Request: ${detail}`)

const text = (value: unknown): string | undefined =>
  typeof value === "string" ? value : typeof value === "number" ? String(value) : undefined

const integer = (value: unknown): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN
  return Number.isInteger(n) ? n : undefined
}

const chatOf = (chatId: string) => {
  const id = integer(chatId)
  if (id === undefined) {
    return { id: -1001000000000, type: "channel" as const, title: chatId, username: chatId.replace(/^@/, "") }
  }
  return id > 0
    ? { id, type: "private" as const, first_name: "Sandbox user" }
    : { id, type: "supergroup" as const, title: "Sandbox group" }
}

// A form body carries JSON-serialized fields (prices, reply_markup) as strings, like the real API accepts.
const jsonField = (value: unknown): unknown => {
  if (typeof value !== "string") return value
  return Option.getOrElse(Schema.decodeUnknownOption(Schema.fromJsonString(Schema.Unknown))(value), () => value)
}

const fileOf = (id: unknown) => {
  const upload = typeof id === "object" && id !== null && "filename" in id ? `upload-${String(id.filename)}` : undefined
  const fileId = upload ?? text(id) ?? "sandbox-file"
  return { file_id: fileId, file_unique_id: `u${fileId}`.slice(0, 32) }
}

/** The field a send method fills in the Message it returns, e.g. `photo` for sendPhoto. */
const sentContent = (method: string, params: Record<string, unknown>): Record<string, unknown> => {
  switch (method) {
    case "sendPhoto":
      return { photo: [{ ...fileOf(params.photo), width: 1280, height: 720 }] }
    case "sendVideo":
      return { video: { ...fileOf(params.video), width: 1280, height: 720, duration: 1 } }
    case "sendAnimation":
      return { animation: { ...fileOf(params.animation), width: 320, height: 240, duration: 1 } }
    case "sendAudio":
      return { audio: { ...fileOf(params.audio), duration: 1 } }
    case "sendVoice":
      return { voice: { ...fileOf(params.voice), duration: 1 } }
    case "sendVideoNote":
      return { video_note: { ...fileOf(params.video_note), length: 240, duration: 1 } }
    case "sendDocument":
      return { document: fileOf(params.document) }
    case "sendSticker":
      return { sticker: { ...fileOf(params.sticker), type: "regular", width: 512, height: 512, is_animated: false, is_video: false } }
    case "sendDice":
      return { dice: { emoji: text(params.emoji) ?? "🎲", value: 1 } }
    case "sendLocation":
      return { location: { latitude: Number(params.latitude ?? 0), longitude: Number(params.longitude ?? 0) } }
    default:
      return {}
  }
}

/** One item of sendMediaGroup's `media` as the Message field it becomes. */
const mediaOf = (item: unknown): Record<string, unknown> => {
  if (typeof item !== "object" || item === null) return {}
  const media = item as Record<string, unknown>
  const type = text(media.type) ?? "photo"
  const caption = text(media.caption)
  return {
    ...sentContent(`send${type.charAt(0).toUpperCase()}${type.slice(1)}`, { [type]: media.media }),
    ...(caption === undefined ? {} : { caption })
  }
}

/**
 * The fields of a multipart upload (grammY's InputFile): text fields as strings, a file as
 * `{ filename, size }`, and `attach://name` references resolved to the file they name.
 */
const multipartFields = (body: string, boundary: string): Record<string, unknown> => {
  const fields: Record<string, unknown> = {}
  for (const part of body.split(`--${boundary}`)) {
    const split = part.indexOf("\r\n\r\n")
    if (split < 0) continue
    const headers = part.slice(0, split)
    const name = /[;\s]name="([^"]*)"/i.exec(headers)?.[1]
    if (name === undefined) continue
    const value = part.slice(split + 4).replace(/\r\n$/, "")
    const filename = /filename="?([^";\r\n]*)"?/i.exec(headers)?.[1]
    fields[name] = filename === undefined ? value : { filename, size: Buffer.byteLength(value, "latin1") }
  }
  for (const [name, value] of Object.entries(fields)) {
    if (typeof value === "string" && value.startsWith("attach://")) fields[name] = fields[value.slice("attach://".length)] ?? value
  }
  return fields
}

const readBody = (req: IncomingMessage) =>
  Effect.callback<string>((resume) => {
    const chunks: Array<Buffer> = []
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
    }
    const onEnd = () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8")))
    // A client that hangs up mid-body is recorded like any other call, with what arrived.
    const onClose = () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8")))
    req.on("data", onData)
    req.once("end", onEnd)
    req.once("close", onClose)
    return Effect.sync(() => {
      req.off("data", onData)
      req.off("end", onEnd)
      req.off("close", onClose)
    })
  })

const clientGone = (res: ServerResponse) =>
  Effect.callback<void>((resume) => {
    const onClose = () => resume(Effect.void)
    res.once("close", onClose)
    return Effect.sync(() => {
      res.off("close", onClose)
    })
  })

const send = (res: ServerResponse, answer: Answer) => {
  if (res.destroyed) return
  const raw = typeof answer.body === "string"
  const payload = raw ? String(answer.body) : JSON.stringify(answer.body)
  res.writeHead(answer.status, {
    "content-type": raw ? "text/html; charset=utf-8" : "application/json",
    "content-length": Buffer.byteLength(payload)
  })
  res.end(payload)
}

export interface StandInOptions {
  readonly port?: number
  /** Logs what the bot sends, as a chat would show it (sandbox mode). */
  readonly logMessages?: boolean
}

const botIdFrom = (token: string): number => integer(token.split(":")[0]) ?? 1000000001

export class BotApiStandIn extends Context.Service<BotApiStandIn, {
  /** The apiRoot to hand to grammY, e.g. `http://127.0.0.1:41234`. */
  readonly url: string
}>()("steadfast/sandbox/BotApiStandIn") {
  static layer(options?: StandInOptions) {
    return Layer.effect(BotApiStandIn, BotApiStandIn.make(options ?? {}))
  }

  static make = Effect.fnUntraced(function*(options: StandInOptions, responder?: Responder) {
    const logMessages = options.logMessages ?? false
    // Per chat, the last message id issued: ids count up per chat, as Telegram's do, and an edit or
    // delete of an id never issued (or deleted) is refused as Telegram refuses it.
    const chats = new Map<string, { last: number; readonly deleted: Set<number> }>()
    const chatState = (chatId: string) => {
      let state = chats.get(chatId)
      if (state === undefined) chats.set(chatId, state = { last: 0, deleted: new Set() })
      return state
    }
    const issued = (chatId: string, messageId: number) => {
      const state = chats.get(chatId)
      return state !== undefined && messageId >= 1 && messageId <= state.last && !state.deleted.has(messageId)
    }
    const webhook = yield* Ref.make<WebhookInfo>({ url: "", has_custom_certificate: false, pending_update_count: 0 })

    const messageIn = Effect.fnUntraced(function*(botId: number, chatId: string, messageId: number) {
      const now = yield* Clock.currentTimeMillis
      return {
        message_id: messageId,
        date: Math.floor(now / 1000),
        chat: chatOf(chatId),
        from: { id: botId, is_bot: true, first_name: "Steadfast Sandbox", username: "steadfast_sandbox_bot" }
      } satisfies Message.ServiceMessage
    })
    const nextMessage = (botId: number, chatId: string) => messageIn(botId, chatId, ++chatState(chatId).last)

    const answer = Effect.fnUntraced(function*(botId: number, method: string, params: Record<string, unknown>) {
      switch (method) {
        case "getMe":
          return ok(
            {
              id: botId,
              is_bot: true,
              first_name: "Steadfast Sandbox",
              username: "steadfast_sandbox_bot",
              can_join_groups: true,
              can_read_all_group_messages: false,
              supports_inline_queries: false,
              can_connect_to_business: false,
              has_main_web_app: false,
              has_topics_enabled: false,
              allows_users_to_create_topics: false,
              can_manage_bots: false,
              supports_join_request_queries: false
            } satisfies UserFromGetMe
          )
        case "sendMessage": {
          const chatId = text(params.chat_id)
          const body = text(params.text)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          if (body === undefined || body.trim() === "") return badRequest("message text is empty")
          const entities = jsonField(params.entities)
          const replyMarkup = jsonField(params.reply_markup)
          const message = {
            ...(yield* nextMessage(botId, chatId)),
            text: body,
            ...(Array.isArray(entities) ? { entities } : {}),
            ...(replyMarkup !== undefined ? { reply_markup: replyMarkup } : {})
          }
          if (logMessages) yield* Effect.log(`bot → chat ${chatId}: ${body}`)
          return ok(message)
        }
        case "editMessageText": {
          const body = text(params.text)
          if (body === undefined || body.trim() === "") return badRequest("message text is empty")
          const inline = text(params.inline_message_id)
          if (inline !== undefined) return ok(true)
          const chatId = text(params.chat_id)
          const messageId = integer(params.message_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          if (messageId === undefined) return badRequest("message identifier is not specified")
          if (!issued(chatId, messageId)) return badRequest("message to edit not found")
          const now = yield* Clock.currentTimeMillis
          const base = yield* messageIn(botId, chatId, messageId)
          if (logMessages) yield* Effect.log(`bot ✎ chat ${chatId} message ${messageId}: ${body}`)
          return ok({ ...base, message_id: messageId, edit_date: Math.floor(now / 1000), text: body })
        }
        case "sendInvoice": {
          const chatId = text(params.chat_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          for (const field of ["title", "description", "payload", "currency"] as const) {
            const value = text(params[field])
            if (value === undefined || value === "") return badRequest(`parameter "${field}" is required`)
          }
          const prices = jsonField(params.prices)
          if (!Array.isArray(prices) || prices.length === 0) return badRequest("parameter \"prices\" is required")
          const total = prices.reduce<number>(
            (sum, price: unknown) =>
              sum + (typeof price === "object" && price !== null && "amount" in price ? integer(price.amount) ?? 0 : 0),
            0
          )
          const invoice = {
            title: text(params.title) ?? "",
            description: text(params.description) ?? "",
            start_parameter: "",
            currency: text(params.currency) ?? "",
            total_amount: total
          }
          if (logMessages) {
            yield* Effect.log(`bot → chat ${chatId}: invoice "${invoice.title}" ${total} ${invoice.currency}`)
          }
          return ok({ ...(yield* nextMessage(botId, chatId)), invoice })
        }
        case "answerPreCheckoutQuery":
          if (text(params.pre_checkout_query_id) === undefined) return badRequest("query_id is empty")
          return ok(true)
        case "answerCallbackQuery":
          if (text(params.callback_query_id) === undefined) return badRequest("query_id is empty")
          return ok(true)
        case "refundStarPayment":
          if (integer(params.user_id) === undefined) return badRequest("user_id is empty")
          if (text(params.telegram_payment_charge_id) === undefined) return badRequest("charge_id is empty")
          return ok(true)
        case "setWebhook": {
          const url = text(params.url) ?? ""
          const allowed = jsonField(params.allowed_updates)
          const secret = text(params.secret_token)
          yield* Ref.set(webhook, {
            url,
            has_custom_certificate: false,
            pending_update_count: 0,
            ...(Array.isArray(allowed) ? { allowed_updates: allowed } : {})
          })
          if (logMessages) yield* Effect.log(`webhook set to ${url === "" ? "(none)" : url}${secret ? " with a secret token" : ""}`)
          return ok(true)
        }
        case "deleteWebhook":
          yield* Ref.set(webhook, { url: "", has_custom_certificate: false, pending_update_count: 0 })
          return ok(true)
        case "getWebhookInfo":
          return ok(yield* Ref.get(webhook))
        case "deleteMessage": {
          const chatId = text(params.chat_id)
          const messageId = integer(params.message_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          if (messageId === undefined) return badRequest("message identifier is not specified")
          if (!issued(chatId, messageId)) return badRequest("message to delete not found")
          chatState(chatId).deleted.add(messageId)
          if (logMessages) yield* Effect.log(`bot ✗ chat ${chatId} message ${messageId} deleted`)
          return ok(true)
        }
        case "sendChatAction":
        case "deleteMessages":
          return ok(true)
        case "sendMediaGroup": {
          const chatId = text(params.chat_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          const media = jsonField(params.media)
          if (!Array.isArray(media) || media.length === 0) return badRequest("parameter \"media\" is required")
          const group = `sandbox-group-${chatState(chatId).last + 1}`
          return ok(
            yield* Effect.forEach(
              media,
              (item: unknown) =>
                Effect.map(nextMessage(botId, chatId), (message) => ({ ...message, media_group_id: group, ...mediaOf(item) }))
            )
          )
        }
        case "copyMessage": {
          const chatId = text(params.chat_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          return ok({ message_id: (yield* nextMessage(botId, chatId)).message_id })
        }
        case "getChat": {
          const chatId = text(params.chat_id)
          if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
          return ok({ ...chatOf(chatId), accent_color_id: 0, max_reaction_count: 11, accepted_gift_types: {} })
        }
        case "getFile": {
          const fileId = text(params.file_id)
          if (fileId === undefined || fileId === "") return badRequest("file_id is empty")
          return ok({ file_id: fileId, file_unique_id: `u${fileId}`.slice(0, 32), file_size: 1024, file_path: `files/${fileId}` })
        }
        case "getChatMember": {
          const userId = integer(params.user_id)
          if (userId === undefined) return badRequest("user_id is empty")
          return ok({ status: "member", user: { id: userId, is_bot: false, first_name: "Sandbox user" } })
        }
        case "getMyCommands":
        case "getUpdates":
          return ok([])
        default: {
          const chatId = text(params.chat_id)
          if (method.startsWith("send") || method === "forwardMessage") {
            if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
            const caption = text(params.caption)
            if (logMessages) yield* Effect.log(`bot → chat ${chatId}: ${method}${caption === undefined ? "" : ` “${caption}”`}`)
            return ok({
              ...(yield* nextMessage(botId, chatId)),
              ...sentContent(method, params),
              ...(caption === undefined ? {} : { caption })
            })
          }
          if (method.startsWith("editMessage") || method === "pinChatMessage" || method === "unpinChatMessage") {
            if (text(params.inline_message_id) !== undefined) return ok(true)
            const messageId = integer(params.message_id)
            if (chatId === undefined || chatId === "") return badRequest("chat_id is empty")
            if (messageId === undefined) {
              return method === "unpinChatMessage" ? ok(true) : badRequest("message identifier is not specified")
            }
            if (!issued(chatId, messageId)) return badRequest(`message to ${method.startsWith("edit") ? "edit" : "pin"} not found`)
            if (!method.startsWith("edit")) return ok(true)
            const now = yield* Clock.currentTimeMillis
            const caption = text(params.caption)
            return ok({
              ...(yield* messageIn(botId, chatId, messageId)),
              edit_date: Math.floor(now / 1000),
              ...(caption === undefined ? {} : { caption })
            })
          }
          // Any other method (set…, answer…, ban…): the stand-in keeps no model of it.
          return ok(true)
        }
      }
    })

    const parseParams = (req: IncomingMessage, body: string, query: URLSearchParams): Record<string, unknown> | undefined => {
      const params: Record<string, unknown> = Object.fromEntries(query)
      if (body.trim() === "") return params
      const contentType = req.headers["content-type"] ?? ""
      if (contentType.includes("application/json")) {
        return Option.match(decodeJsonParams(body), {
          onNone: () => undefined,
          onSome: (json) => ({ ...params, ...json })
        })
      }
      if (contentType.includes("application/x-www-form-urlencoded")) {
        return { ...params, ...Object.fromEntries(new URLSearchParams(body)) }
      }
      const boundary = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType)
      if (contentType.includes("multipart/form-data") && boundary !== null) {
        return { ...params, ...multipartFields(body, boundary[1] ?? boundary[2] ?? "") }
      }
      return undefined
    }

    const handle = Effect.fnUntraced(function*(req: IncomingMessage, res: ServerResponse) {
      const at = yield* Clock.currentTimeMillis
      const url = new URL(req.url ?? "/", "http://stand-in")
      const route = /^\/bot([^/]+)\/(?:test\/)?([A-Za-z0-9_]+)$/.exec(url.pathname)
      const body = yield* readBody(req)
      if (route === null) return send(res, telegramError(404, "Not Found"))
      const botId = botIdFrom(decodeURIComponent(route[1] ?? ""))
      const method = route[2] ?? ""
      const params = parseParams(req, body, url.searchParams)
      const call: IncomingCall = { method, params, at }
      const model = params === undefined ? Effect.succeed(badRequest("can't parse request body")) : answer(botId, method, params)
      const respond = Effect.gen(function*() {
        const result = yield* (responder === undefined ? model : responder.respond(call, model))
        if (logMessages) {
          yield* Effect.log(
            `Bot API ${method}${params?.["chat_id"] === undefined ? "" : ` (chat ${String(params["chat_id"])})`}: ${result.status}`
          )
        }
        send(res, result)
      })
      const hungUp = clientGone(res).pipe(Effect.andThen(responder === undefined ? Effect.void : responder.hungUp(call)))
      yield* Effect.raceFirst(respond, hungUp)
    })

    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const server = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>, StandInListenError>((resume) => {
        // keepAliveTimeout is short so an idle grammY socket never delays shutdown.
        const server = createServer({ keepAliveTimeout: 500 }, (req, res) => {
          run(
            handle(req, res).pipe(
              Effect.catchCause((cause) =>
                Effect.logError("Bot API stand-in failed to answer", cause).pipe(
                  Effect.andThen(Effect.sync(() => send(res, telegramError(500))))
                )
              )
            )
          )
        })
        const onError = (error: Error) => resume(Effect.fail(new StandInListenError({ port: options.port ?? 0, reason: error.message })))
        server.once("error", onError)
        server.listen(options.port ?? 0, "127.0.0.1", () => {
          server.off("error", onError)
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    const address = server.address()
    const url = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : options.port}`

    if (logMessages) yield* Effect.log(`Bot API stand-in listening on ${url}`)

    return BotApiStandIn.of({ url })
  })
}
