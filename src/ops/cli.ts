// Operator commands: `npm run ops -- <command>`. Exit codes: 0 done, 1 operational error
// (database unreachable, bad configuration), 2 bad arguments or an update that cannot be acted on.

// Subpath imports: the package root loads every Node module (HTTP, Redis, workers), which
// doubles the start-up time of a command that runs for a fraction of a second.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Duration, Effect, Exit, Layer, Option, Predicate, References } from "effect"
import { Argument, CliConfig, CliError, CliOutput, Command, Flag, GlobalFlag } from "effect/cli"
import { parsePeriod } from "../Config.ts"
import {
  type CallDetails,
  type Failure,
  INBOX_STATUSES,
  Operations,
  OUTBOX_STATUSES,
  type Settled,
  type Stats,
  type UpdateDetails
} from "./Operations.ts"
import { TargetDatabase } from "./TargetDatabase.ts"

const PURGE_BATCH_SIZE = 1000

const OperationsLayer = Operations.layerNoDeps.pipe(Layer.provide(TargetDatabase.layer))
/** For commands that only look: they never migrate the database they look at. */
const ReadOnlyLayer = Operations.layerNoDeps.pipe(Layer.provide(TargetDatabase.layerReadOnly))

const parseUpdateId = (text: string): Option.Option<number> =>
  /^\d{1,16}$/.test(text) && Number.isSafeInteger(Number(text)) ? Option.some(Number(text)) : Option.none()

const updateId = Argument.String("update_id").pipe(
  Argument.filterMap(parseUpdateId, () => "an update_id (a whole number)"),
  Argument.withDescription("The update's update_id")
)

const formatAge = (ms: number): string => {
  const seconds = Math.max(0, Math.floor(ms / 1000))
  const [d, h, m, s] = [Math.floor(seconds / 86400), Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60]
  return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const statusLines = (statuses: ReadonlyArray<string>, counts: Record<string, number>, notes: Record<string, string>) => {
  const total = statuses.reduce((sum, status) => sum + (counts[status] ?? 0), 0)
  return [
    ...statuses.map((status) => {
      const line = `  ${status.padEnd(11)}${String(counts[status] ?? 0).padStart(9)}`
      return notes[status] === undefined ? line : `${line}  (${notes[status]})`
    }),
    `  ${"total".padEnd(11)}${String(total).padStart(9)}`
  ]
}

const formatStats = (stats: Stats): string => {
  const notes: Record<string, string> = {}
  if (stats.inboxBackoff > 0) notes["pending"] = `${stats.inboxBackoff} waiting out a retry backoff`
  if (stats.inboxExpired > 0) notes["processing"] = `${stats.inboxExpired} with an expired lease, to be claimed again`
  if ((stats.inbox["dead"] ?? 0) > 0) notes["dead"] = "requeue with: npm run ops -- retry --all-dead"
  return [
    "inbox",
    ...statusLines(INBOX_STATUSES, stats.inbox, notes),
    `  oldest pending: ${
      Option.match(stats.oldestPending, {
        onNone: () => "none",
        onSome: (oldest) => `update ${oldest.updateId}, received ${formatAge(oldest.ageMs)} ago`
      })
    }`,
    "outbox",
    ...statusLines(OUTBOX_STATUSES, stats.outbox, {})
  ].join("\n")
}

const indentRest = (text: string) => text.split("\n").join("\n              ")

/**
 * An error text as stored (`Cause.pretty`: messages nested as `[cause]:` under stack frames)
 * reduced to its messages, innermost first: for a failed query that is PostgreSQL's own words,
 * which the stored text puts last, under the driver's generic "Query failed".
 */
export const errorMessages = (text: string): ReadonlyArray<string> =>
  text.split("\n")
    .filter((line) => !/^\s*at /.test(line) && !/^\s*[{}]\s*$/.test(line) && line.trim() !== "")
    .map((line) => line.trim().replace(/^\[cause\]:\s*/, "").replace(/\s*\{$/, ""))
    .reverse()

/** The innermost message, then what it came through. */
const headline = (text: string): string => {
  const [first, ...rest] = errorMessages(text)
  return first === undefined ? "" : rest.length === 0 ? first : `${first}  (via ${rest.join(" ← ")})`
}

const historyLines = (history: ReadonlyArray<Failure>, lastError: string | null, indent: string): ReadonlyArray<string> => {
  if (history.length === 0) return lastError === null ? [`${indent}(none)`] : [`${indent}${headline(lastError)}`]
  return history.map((failure) => {
    const attempts = failure.first_attempt === failure.last_attempt
      ? `attempt ${failure.first_attempt}`
      : `attempts ${failure.first_attempt}-${failure.last_attempt}`
    const times = failure.times === 1 ? failure.first_at : `${failure.times}× from ${failure.first_at} to ${failure.last_at}`
    return `${indent}${attempts}, ${times}: ${headline(failure.error)}`
  })
}

const field = (name: string, value: string) => `  ${name.padEnd(12)}${value}`

const formatCall = (call: CallDetails): ReadonlyArray<string> => [
  `  #${call.id} ${call.method} ${call.status}, ${plural(call.attempts, "attempt")}, created ${call.created_at}`,
  ...(call.history.length === 0 && call.last_error === null ? [] : historyLines(call.history, call.last_error, "      "))
]

const formatUpdate = (update: UpdateDetails): string => {
  const waiting = update.status === "pending"
    ? [field("runnable", update.available_in_ms > 0 ? `in ${formatAge(update.available_in_ms)} (${update.available_at})` : "now")]
    : []
  return [
    `update ${update.update_id}`,
    field("status", update.status),
    field("kind", update.kind),
    field("chat", update.chat_key),
    field("attempts", String(update.attempts)),
    field("received", `${update.received_at} (${formatAge(update.received_ago_ms)} ago)`),
    ...waiting,
    field("finished", update.finished_at ?? "-"),
    field("error", update.last_error === null ? "-" : headline(update.last_error)),
    field("trace id", update.trace_id ?? "-"),
    "error history",
    ...historyLines(update.history, update.last_error, "  "),
    "last error in full",
    update.last_error === null ? "  -" : `  ${indentRest(update.last_error)}`,
    "bot api calls",
    ...(update.calls.length === 0 ? ["  (none)"] : update.calls.flatMap(formatCall)),
    "raw update",
    JSON.stringify(update.payload, null, 2)
  ].join("\n")
}

const formatCallDetails = (call: CallDetails): string =>
  [
    `call ${call.id}`,
    field("status", call.status),
    field("method", call.method),
    field("chat", call.chat_key),
    field("update", call.update_id ?? "-"),
    field("attempts", String(call.attempts)),
    field("created", `${call.created_at} (${formatAge(call.created_ago_ms)} ago)`),
    field("error", call.last_error === null ? "-" : headline(call.last_error)),
    "error history",
    ...historyLines(call.history, call.last_error, "  ")
  ].join("\n")

const json = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const jsonFlag = Flag.Boolean("json").pipe(Flag.withDefault(false), Flag.withDescription("Print JSON instead of text"))

const callId = Flag.String("call").pipe(
  Flag.filterMap(parseUpdateId, () => "a call id (a whole number, as `list --calls` shows it)"),
  Flag.withDescription("A Bot API call (outbox row) instead of an update"),
  Flag.optional
)

const stats = Command.make("stats", {}, () =>
  Effect.gen(function*() {
    const ops = yield* Operations
    yield* Console.log(formatStats(yield* ops.stats))
  })).pipe(
    Command.withDescription("Counts of inbox and outbox rows by status, and the age of the oldest pending update"),
    Command.withShortDescription("Counts by status, oldest pending update"),
    Command.provide(ReadOnlyLayer)
  )

const list = Command.make("list", {
  calls: Flag.Boolean("calls").pipe(Flag.withDefault(false), Flag.withDescription("List Bot API calls (outbox) instead of updates")),
  status: Flag.String("status").pipe(
    Flag.withDescription(`Only this status: updates ${INBOX_STATUSES.join(", ")}; calls ${OUTBOX_STATUSES.join(", ")}`),
    Flag.optional
  ),
  kind: Flag.String("kind").pipe(Flag.withDescription("Only this update kind (message, callback_query…) or call method"), Flag.optional),
  chat: Flag.String("chat").pipe(Flag.withDescription("Only this chat: its id or chat_key"), Flag.optional),
  olderThan: Flag.String("older-than").pipe(
    Flag.withDescription("Only rows received (calls: created) longer ago than this: 30m, 12h, 7d"),
    Flag.filterMap(parsePeriod, () => "a duration such as 7d, 12h or 30m"),
    Flag.optional
  ),
  limit: Flag.Int("limit").pipe(Flag.withDefault(50), Flag.withDescription("At most this many rows, newest first")),
  json: jsonFlag
}, (options) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    const filter = {
      status: options.status,
      kind: options.kind,
      chat: options.chat,
      olderThan: options.olderThan,
      limit: Math.max(1, options.limit)
    }
    if (options.calls) {
      const calls = yield* ops.listCalls(filter)
      if (options.json) return yield* json(calls)
      if (calls.length === 0) return yield* Console.log("no calls match")
      return yield* Console.log(
        calls.map((call) =>
          [
            `#${call.id}`.padEnd(10),
            call.status.padEnd(10),
            call.method.padEnd(22),
            call.chat_key.padEnd(18),
            `${plural(call.attempts, "attempt")}`.padEnd(12),
            `${formatAge(call.created_ago_ms)} ago`.padEnd(10),
            call.last_error === null ? "" : errorMessages(call.last_error)[0] ?? ""
          ].join(" ").trimEnd()
        ).join("\n")
      )
    }
    const updates = yield* ops.listUpdates(filter)
    if (options.json) return yield* json(updates)
    if (updates.length === 0) return yield* Console.log("no updates match")
    return yield* Console.log(
      updates.map((update) =>
        [
          update.update_id.padEnd(12),
          update.status.padEnd(10),
          update.kind.padEnd(16),
          update.chat_key.padEnd(18),
          `${plural(update.attempts, "attempt")}`.padEnd(12),
          `${formatAge(update.age_ms)} ago`.padEnd(10),
          update.last_error === null ? "" : errorMessages(update.last_error)[0] ?? ""
        ].join(" ").trimEnd()
      ).join("\n")
    )
  })).pipe(
    Command.withDescription(
      "Updates (or with --calls, Bot API calls), newest first, filtered by status, kind or method, chat and age; " +
        "each with its innermost error message"
    ),
    Command.withShortDescription("Updates or calls by status, kind, chat, age"),
    Command.provide(ReadOnlyLayer)
  )

/** `show` and `discard` act on one row: an update (by update_id) or a call (--call), never both or neither. */
const updateOrCall = <Input extends { readonly updateId: Option.Option<number>; readonly call: Option.Option<number> }>(
  target: Input
) =>
  Option.isSome(target.updateId) === Option.isSome(target.call)
    ? Effect.fail(new CliError.ValidationError({ message: "give either an update_id or --call <id>" }))
    : Effect.void

const show = Command.make(
  "show",
  { updateId: updateId.pipe(Argument.optional), call: callId, json: jsonFlag },
  (options) =>
    Effect.gen(function*() {
      const ops = yield* Operations
      if (Option.isSome(options.call)) {
        const call = yield* ops.showCall(options.call.value)
        return yield* options.json ? json(call) : Console.log(formatCallDetails(call))
      }
      const update = yield* ops.show(Option.getOrElse(options.updateId, () => 0))
      return yield* options.json ? json(update) : Console.log(formatUpdate(update))
    })
).pipe(
  Command.withDescription(
    "One update in full: status, attempts, times, its error history (PostgreSQL's message first), trace id, its Bot API " +
      "calls with theirs, and the raw update. With --call <id>: one Bot API call and its error history"
  ),
  Command.withShortDescription("One update or call in full"),
  Command.validate(updateOrCall),
  Command.provide(ReadOnlyLayer)
)

const requeued = (ids: ReadonlyArray<string>) =>
  ids.length === 0
    ? "no dead updates: nothing changed"
    : `requeued ${plural(ids.length, "dead update")}: ${ids.join(", ")}`

const settledLines = (settled: Settled, waited: string): ReadonlyArray<string> => [
  ...(settled.done.length === 0 ? [] : [`done: ${settled.done.join(", ")}`]),
  ...(settled.diedAgain.length === 0
    ? []
    : [`died again: ${settled.diedAgain.join(", ")} (see: npm run ops -- show <update_id>; dismiss: npm run ops -- discard <update_id>)`]),
  ...(settled.open.length === 0 ? [] : [`not finished within ${waited}: ${settled.open.join(", ")} (is the service running?)`])
]

const retry = Command.make("retry", {
  updateId: updateId.pipe(Argument.optional),
  allDead: Flag.Boolean("all-dead").pipe(Flag.withDefault(false), Flag.withDescription("Requeue every dead update")),
  call: callId,
  allExpired: Flag.Boolean("all-expired").pipe(
    Flag.withDefault(false),
    Flag.withDescription("Requeue every Bot API call given up after OUTBOX_MAX_AGE (status expired)")
  ),
  wait: Flag.String("wait").pipe(
    Flag.withDescription("With --all-dead: how long to wait for the requeued updates to finish, to report which died again (0s: no wait)"),
    Flag.filterMap((text) => Option.map(parsePeriod(text), (period) => ({ text, period })), () => "a duration such as 10s or 2m"),
    Flag.withDefault({ text: "10s", period: Duration.seconds(10) })
  )
}, (options) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    if (Option.isSome(options.call)) {
      const id = yield* ops.retryCall(options.call.value)
      return yield* Console.log(`requeued call ${id}`)
    }
    if (options.allExpired) {
      const ids = yield* ops.retryAllExpired
      return yield* Console.log(
        ids.length === 0 ? "no expired calls: nothing changed" : `requeued ${plural(ids.length, "expired call")}: ${ids.join(", ")}`
      )
    }
    if (Option.isSome(options.updateId)) return yield* Console.log(requeued([yield* ops.retry(options.updateId.value)]))
    const ids = yield* ops.retryAllDead
    yield* Console.log(requeued(ids))
    if (ids.length === 0 || Duration.isZero(options.wait.period)) return
    const settled = yield* ops.awaitSettled(ids, options.wait.period)
    yield* Console.log(settledLines(settled, options.wait.text).join("\n"))
  })).pipe(
    Command.withDescription(
      "Requeue dead updates: status pending, attempts 0, runnable now; last_error is kept until the update next finishes. " +
        "A running service is notified and picks them up at once. Later updates of the chat that were handled meanwhile stay " +
        "handled; the requeued one runs before the chat's updates still waiting, once one of its chat in progress has finished. " +
        "--all-dead then waits (--wait) and reports which were done and which died again. " +
        "--call <id> and --all-expired requeue failed or expired Bot API calls the same way (their age limit starts over)"
    ),
    Command.withShortDescription("Requeue dead updates or failed calls"),
    Command.validate(({ allDead, allExpired, call, updateId }) =>
      [Option.isSome(updateId), allDead, Option.isSome(call), allExpired].filter(Boolean).length !== 1
        ? Effect.fail(new CliError.ValidationError({ message: "give one of: an update_id, --all-dead, --call <id>, --all-expired" }))
        : Effect.void
    ),
    Command.provide(OperationsLayer)
  )

const discard = Command.make("discard", { updateId: updateId.pipe(Argument.optional), call: callId }, (options) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    if (Option.isSome(options.call)) {
      return yield* Console.log(`discarded call ${yield* ops.discardCall(options.call.value)}: it will not be sent`)
    }
    const id = yield* ops.discard(Option.getOrElse(options.updateId, () => 0))
    yield* Console.log(`discarded update ${id}: it will not run again, and a redelivery of it is still ignored`)
  })).pipe(
    Command.withDescription(
      "Give up on a dead update (status discarded: never run again; its row stays, so Telegram's redelivery of it is still " +
        "ignored, and /health's inbox:dead no longer counts it), or with --call <id> on a failed or expired Bot API call"
    ),
    Command.withShortDescription("Dismiss a dead update or a failed call"),
    Command.validate(updateOrCall),
    Command.provide(OperationsLayer)
  )

const purge = Command.make("purge", {
  olderThan: Flag.String("older-than").pipe(
    Flag.withDescription("Age of finished rows to delete: a number and s, m, h, d or w (7d, 12h, 30m)"),
    Flag.filterMap((text) => Option.map(parsePeriod(text), (period) => ({ text, period })), () => "a duration such as 7d, 12h or 30m")
  ),
  includeDead: Flag.Boolean("include-dead").pipe(Flag.withDefault(false), Flag.withDescription("Delete dead updates as well")),
  force: Flag.Boolean("force").pipe(Flag.withDefault(false), Flag.withDescription("Allow --older-than below 1d"))
}, ({ includeDead, olderThan }) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    const result = yield* ops.purge({ olderThan: olderThan.period, batchSize: PURGE_BATCH_SIZE, includeDead })
    const inbox = result.inbox.done + result.inbox.skipped + result.inbox.dead
    const outbox = result.outbox.sent + result.outbox.failed
    yield* Console.log([
      `purged ${plural(inbox, "inbox update")} finished more than ${olderThan.text} ago ` +
      `(done ${result.inbox.done}, skipped ${result.inbox.skipped}, dead ${result.inbox.dead})`,
      `purged ${plural(outbox, "outbox call")} older than ${olderThan.text} (sent ${result.outbox.sent}, failed ${result.outbox.failed})`,
      ...(includeDead ? [] : ["dead updates were kept (add --include-dead to purge them too)"])
    ].join("\n"))
  })).pipe(
    Command.withDescription(
      "Delete finished rows older than --older-than: done and skipped updates, sent and failed calls, in batches. " +
        "Below 1d it needs --force: Telegram redelivers an update for up to 24 hours, and one whose row is gone would be handled again"
    ),
    Command.withShortDescription("Delete old finished rows"),
    // The inbox row is what makes a redelivered update_id a no-op.
    Command.validate(({ force, olderThan }) =>
      !force && Duration.isLessThan(olderThan.period, Duration.days(1))
        ? Effect.fail(
          new CliError.ValidationError({
            message: "--older-than below 1d needs --force: a redelivered update whose row is gone would be handled again"
          })
        )
        : Effect.void
    ),
    Command.provide(OperationsLayer)
  )

const root = Command.make("ops").pipe(
  Command.withDescription(
    "Operator commands for the steadfast inbox and outbox (npm run ops -- <command>). " +
      "They work on DATABASE_URL, or on the embedded PostgreSQL under .data/ when it is not set"
  ),
  Command.withSubcommands([stats, list, show, retry, discard, purge])
)

/** Bad arguments: one line saying what is wrong and the usage line; full help only on --help. */
const Presenter = CliOutput.layerPresenter({
  present: Effect.fnUntraced(function*(event) {
    const formatter = yield* CliOutput.Formatter
    switch (event._tag) {
      case "Help":
        // Implicit help is `ops` without a command: an error, so it goes to stderr.
        return yield* (event.reason === "Requested" ? Console.log : Console.error)(formatter.formatHelpDoc(event.helpDoc))
      case "InvalidInvocation":
        yield* Console.error(`ops: ${event.errors.map((error) => error.message).join("; ")}`)
        return yield* Console.error(`usage: ${event.helpDoc.usage}   (add --help for details)`)
      case "Version":
        return yield* Console.log(formatter.formatVersion(event.name, event.version))
    }
  })
})

/** Strips the password from anything that looks like a connection URL. */
const redact = (text: string) => text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]+:)[^@\s]*@/gi, "$1***@")

/** SQLSTATE 42P01: the schema is not there (a read-only command on a database never migrated). */
const undefinedTable = (cause: unknown) => Predicate.hasProperty(cause, "code") && cause.code === "42P01"

const causeText = (cause: unknown): string =>
  cause instanceof Error && cause.message !== "" ? `: ${cause.message}` : typeof cause === "string" && cause !== "" ? `: ${cause}` : ""

const program = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.as(0),
  Effect.catch((error) => {
    if (CliError.isCliError(error)) return Effect.succeed(2) // already presented
    switch (error._tag) {
      case "UpdateNotFound":
      case "NotDead":
      case "CallNotFound":
      case "NotFailed":
        return Effect.as(Console.error(`ops: ${error.message}`), 2)
      case "SqlError":
        if (undefinedTable(error.reason.cause)) {
          return Effect.as(
            Console.error(
              "ops: the database has no steadfast tables yet: the service creates them when it first starts " +
                "(commands that only look never migrate)"
            ),
            1
          )
        }
        return Effect.as(
          Console.error(redact(`ops: database error (${error.reason._tag}): ${error.message}${causeText(error.reason.cause)}`)),
          1
        )
      case "MigrationError":
        return Effect.as(
          Console.error(redact(`ops: database migration failed (${error.kind}): ${error.message}${causeText(error.cause)}`)),
          1
        )
      case "PoolTimeout":
      case "InvalidConfig":
      case "BotMigrationFailed":
        return Effect.as(Console.error(redact(`ops: ${error.message}`)), 1)
      case "EmbeddedDatabaseError":
        return Effect.as(Console.error(redact(`ops: ${error.reason}`)), 1)
    }
  }),
  Effect.catchCause((cause) => Effect.as(Console.error(redact(`ops: unexpected failure\n${Cause.pretty(cause)}`)), 1)),
  Effect.provide(Layer.mergeAll(
    NodeServices.layer,
    Presenter,
    CliConfig.layer({ builtIns: [GlobalFlag.Help] }),
    // Migration and embedded-server chatter would bury the command's own output.
    Layer.succeed(References.MinimumLogLevel, "Warn")
  ))
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit)
        ? (typeof exit.value === "number" ? exit.value : 0)
        : Cause.hasInterruptsOnly(exit.cause)
        ? 130
        : 1
    )
})
