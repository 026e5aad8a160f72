// Operator commands: `npm run ops -- <command>`. Exit codes: 0 done, 1 operational error
// (database unreachable, bad configuration), 2 bad arguments or an update that cannot be acted on.

// Subpath imports: the package root loads every Node module (HTTP, Redis, workers), which
// doubles the start-up time of a command that runs for a fraction of a second.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Duration, Effect, Exit, Layer, Option, References } from "effect"
import { Argument, CliConfig, CliError, CliOutput, Command, Flag, GlobalFlag } from "effect/cli"
import { parsePeriod } from "../Config.ts"
import { INBOX_STATUSES, Operations, OUTBOX_STATUSES, type Stats, type UpdateDetails } from "./Operations.ts"
import { TargetDatabase } from "./TargetDatabase.ts"

const PURGE_BATCH_SIZE = 1000

const OperationsLayer = Operations.layerNoDeps.pipe(Layer.provide(TargetDatabase.layer))

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

const formatUpdate = (update: UpdateDetails): string => {
  const field = (name: string, value: string) => `  ${name.padEnd(12)}${value}`
  const waiting = update.status === "pending"
    ? [field("runnable", update.available_in_ms > 0 ? `in ${formatAge(update.available_in_ms)} (${update.available_at})` : "now")]
    : []
  const calls = update.calls.length === 0
    ? ["  (none)"]
    : update.calls.map((call) =>
      `  #${call.id} ${call.method} ${call.status}, ${plural(call.attempts, "attempt")}` +
      (call.last_error === null ? "" : `, last error: ${call.last_error.split("\n")[0]}`)
    )
  return [
    `update ${update.update_id}`,
    field("status", update.status),
    field("kind", update.kind),
    field("chat", update.chat_key),
    field("attempts", String(update.attempts)),
    field("received", `${update.received_at} (${formatAge(update.received_ago_ms)} ago)`),
    ...waiting,
    field("finished", update.finished_at ?? "-"),
    field("last error", update.last_error === null ? "-" : indentRest(update.last_error)),
    field("trace id", update.trace_id ?? "-"),
    "bot api calls",
    ...calls,
    "raw update",
    JSON.stringify(update.payload, null, 2)
  ].join("\n")
}

const stats = Command.make("stats", {}, () =>
  Effect.gen(function*() {
    const ops = yield* Operations
    yield* Console.log(formatStats(yield* ops.stats))
  })).pipe(
    Command.withDescription("Counts of inbox and outbox rows by status, and the age of the oldest pending update"),
    Command.withShortDescription("Counts by status, oldest pending update"),
    Command.provide(OperationsLayer)
  )

const show = Command.make("show", { updateId }, ({ updateId }) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    yield* Console.log(formatUpdate(yield* ops.show(updateId)))
  })).pipe(
    Command.withDescription("One update: status, attempts, times, last error, trace id, its Bot API calls and the raw update"),
    Command.withShortDescription("One update in full"),
    Command.provide(OperationsLayer)
  )

const requeued = (ids: ReadonlyArray<string>) =>
  ids.length === 0
    ? "no dead updates: nothing changed"
    : `requeued ${plural(ids.length, "dead update")}: ${ids.join(", ")}`

const retry = Command.make("retry", {
  updateId: updateId.pipe(Argument.optional),
  allDead: Flag.Boolean("all-dead").pipe(Flag.withDefault(false), Flag.withDescription("Requeue every dead update"))
}, ({ allDead, updateId }) =>
  Effect.gen(function*() {
    const ops = yield* Operations
    const ids = Option.isSome(updateId) && !allDead ? [yield* ops.retry(updateId.value)] : yield* ops.retryAllDead
    yield* Console.log(requeued(ids))
  })).pipe(
    Command.withDescription(
      "Requeue dead updates: status pending, attempts 0, runnable now; last_error is kept until the update next finishes. " +
        "A running service is notified and picks them up at once. Later updates of the chat that were handled meanwhile stay " +
        "handled; the requeued one runs next, once an update of its chat still in progress has finished"
    ),
    Command.withShortDescription("Requeue one dead update, or all of them"),
    Command.validate(({ allDead, updateId }) =>
      Option.isSome(updateId) === allDead
        ? Effect.fail(new CliError.ValidationError({ message: "give either an update_id or --all-dead" }))
        : Effect.void
    ),
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
  Command.withSubcommands([stats, show, retry, purge])
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

const causeText = (cause: unknown): string =>
  cause instanceof Error && cause.message !== "" ? `: ${cause.message}` : typeof cause === "string" && cause !== "" ? `: ${cause}` : ""

const program = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.as(0),
  Effect.catch((error) => {
    if (CliError.isCliError(error)) return Effect.succeed(2) // already presented
    switch (error._tag) {
      case "UpdateNotFound":
      case "NotDead":
        return Effect.as(Console.error(`ops: ${error.message}`), 2)
      case "SqlError":
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
