// Test-only handlers that misbehave on a marker command, placed in front of the shipped handlers.
// Each one records that it ran (in a probe the test can await) and most write a row to
// `test_marks` first, so a test can prove the write was rolled back with the transaction.
import { Clock, Effect, type Latch, Stream, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { BotDefinition } from "../../../src/bot/Bot.ts"
import { fallback } from "../../../src/bot/handlers/Basics.ts"
import { myBot } from "../../../src/MyBot.ts"
import { type Handler, HandlerFailure, isCommand, makeHandler } from "../../../src/bot/Handler.ts"

/** Created by the test in its fresh database before the app starts. */
export const MARKS_TABLE_DDL = `
  CREATE TABLE test_marks (
    id bigserial PRIMARY KEY,
    update_id bigint NOT NULL,
    marker text NOT NULL
  )`

export type Marker = "fail" | "die" | "throw" | "hang" | "sleep" | "text" | "latch" | "wait" | "latchcall"

export interface ProbeEntry {
  readonly instance: string
  readonly marker: Marker
  readonly updateId: number
  readonly at: number
  /** The message a handler's reply answered with, when it replied. */
  readonly messageId?: number
}

/** What the handlers report; `changes` lets a test wait for an entry without polling. */
export type Probe = SubscriptionRef.SubscriptionRef<ReadonlyArray<ProbeEntry>>

export const makeProbe: Effect.Effect<Probe> = SubscriptionRef.make<ReadonlyArray<ProbeEntry>>([])

/** Waits until `predicate` holds for the recorded entries. */
export const awaitProbe = (
  probe: Probe,
  predicate: (entries: ReadonlyArray<ProbeEntry>) => boolean,
  timeout: `${number} seconds`
): Effect.Effect<ReadonlyArray<ProbeEntry>> =>
  SubscriptionRef.changes(probe).pipe(
    Stream.filter(predicate),
    Stream.runHead,
    Effect.flatMap(Effect.fromOption),
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.flatMap(SubscriptionRef.get(probe), (entries) =>
          Effect.die(new Error(`probe condition not met within ${timeout}; entries: ${JSON.stringify(entries)}`)))
    }),
    Effect.orDie
  )

const record = (probe: Probe, instance: string, marker: Marker, updateId: number, messageId?: number) =>
  Effect.flatMap(
    Clock.currentTimeMillis,
    (at) =>
      SubscriptionRef.update(
        probe,
        (entries) => [...entries, { instance, marker, updateId, at, ...(messageId === undefined ? {} : { messageId }) }]
      )
  )

const mark = (updateId: number, marker: Marker) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`INSERT INTO test_marks (update_id, marker) VALUES (${updateId}, ${marker})`
  })

/**
 * `/fail`: writes a mark, replies at once and queues a reply for after commit, then fails with
 * HandlerFailure; its probe entry carries the message its reply answered with.
 * `/die`: writes a mark, then dies (Effect.die). `/throw`: a JS throw inside Effect.sync.
 * `/hang`: writes a mark, then never finishes (inside its own span, as shipped handlers run). `/sleep`:
 * writes a mark, then runs `pg_sleep(60)`, so a timeout interrupts a query in flight.
 * `/latch` (only with a `latch`): writes a mark, queues an after-commit reply, then waits until the test opens
 * the latch, and finishes normally. `/wait` (only with a `latch`): the same without the mark, so
 * it writes nothing and its finish shares a statement with others finishing at once. `/latchcall`
 * (only with a `latch`): writes a mark, waits for the latch, then replies at once.
 */
export const faultyHandlers = (probe: Probe, instance = "app", latch?: Latch.Latch): ReadonlyArray<Handler> => [
  makeHandler({
    name: "test-fail",
    matches: isCommand("fail"),
    handle: ({ afterCommit, reply, update }) =>
      Effect.gen(function*() {
        yield* mark(update.update_id, "fail")
        const sent = yield* reply(`about to fail ${update.update_id}`)
        yield* record(probe, instance, "fail", update.update_id, sent.message_id)
        yield* afterCommit.reply(`committed ${update.update_id}`)
        return yield* new HandlerFailure({ reason: `marker /fail in update ${update.update_id}` })
      })
  }),
  makeHandler({
    name: "test-die",
    matches: isCommand("die"),
    handle: ({ update }) =>
      Effect.gen(function*() {
        yield* record(probe, instance, "die", update.update_id)
        yield* mark(update.update_id, "die")
        return yield* Effect.die(new Error(`defect from /die in update ${update.update_id}`))
      })
  }),
  makeHandler({
    name: "test-throw",
    matches: isCommand("throw"),
    handle: ({ update }) =>
      Effect.gen(function*() {
        yield* record(probe, instance, "throw", update.update_id)
        yield* mark(update.update_id, "throw")
        yield* Effect.sync(() => {
          throw new TypeError(`thrown from /throw in update ${update.update_id}`)
        })
      })
  }),
  makeHandler({
    name: "test-hang",
    matches: isCommand("hang"),
    handle: Effect.fn("Handler.test-hang")(function*({ update }) {
      yield* mark(update.update_id, "hang")
      yield* record(probe, instance, "hang", update.update_id)
      return yield* Effect.never
    })
  }),
  makeHandler({
    name: "test-sleep",
    matches: isCommand("sleep"),
    handle: ({ update }) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* mark(update.update_id, "sleep")
        yield* record(probe, instance, "sleep", update.update_id)
        yield* sql`SELECT pg_sleep(60)`
      })
  }),
  ...(latch === undefined ? [] : [
    makeHandler({
      name: "test-latch",
      matches: isCommand("latch"),
      handle: ({ afterCommit, update }) =>
        Effect.gen(function*() {
          yield* mark(update.update_id, "latch")
          yield* afterCommit.reply(`latched ${update.update_id}`)
          yield* record(probe, instance, "latch", update.update_id)
          yield* latch.await
        })
    }),
    makeHandler({
      name: "test-latchcall",
      matches: isCommand("latchcall"),
      handle: ({ reply, update }) =>
        Effect.gen(function*() {
          yield* mark(update.update_id, "latchcall")
          yield* record(probe, instance, "latchcall", update.update_id)
          yield* latch.await
          yield* reply(`after the latch ${update.update_id}`)
        })
    }),
    makeHandler({
      name: "test-wait",
      matches: isCommand("wait"),
      handle: ({ afterCommit, update }) =>
        Effect.gen(function*() {
          yield* afterCommit.reply(`waited ${update.update_id}`)
          yield* record(probe, instance, "wait", update.update_id)
          yield* latch.await
        })
    })
  ])
]

/** Records every plain text message it sees, then lets the shipped fallback answer it. */
export const recordingText = (probe: Probe, instance: string): Handler =>
  makeHandler({
    name: "test-recording-text",
    matches: fallback.matches,
    handle: (context) => Effect.andThen(record(probe, instance, "text", context.update.update_id), fallback.handle(context))
  })

/** The faulty handlers in front of the shipped ones, which answer everything else as usual. */
export const faultyThenShipped = (probe: Probe, instance = "app", latch?: Latch.Latch): BotDefinition => [
  ...faultyHandlers(probe, instance, latch),
  ...myBot
]

/** The faulty handlers, the shipped bot but with a recorder in front of its fallback. */
export const recordingThenShipped = (probe: Probe, instance: string): BotDefinition => [
  ...faultyHandlers(probe, instance),
  ...myBot.map((entry) => entry === fallback ? recordingText(probe, instance) : entry)
]
