import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer, Redacted } from "effect"
import { makeAppLayer } from "../../src/App.ts"
import { Database } from "../../src/db/Database.ts"
import { BotApiRecorder, type RecordedCall } from "../support/BotApiRecorder.ts"
import { MIN_EMPTY_POLL } from "../../src/http/Poller.ts"
import { sampleUpdate } from "../../src/sandbox/sampleUpdate.ts"
import { testEnv } from "../support/TestApp.ts"
import { freshDatabase, pgProbe } from "../support/TestDatabase.ts"

const replyTo = (text: string) => `I don't understand “${text}”. Try /help`

const replies = (calls: ReadonlyArray<RecordedCall>) =>
  calls.filter((call) => call.method === "sendMessage").map((call) => `${String(call.params["chat_id"])}:${String(call.params["text"])}`)

const pollingApp = (url: string, apiRoot: string) =>
  makeAppLayer().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(testEnv(url, apiRoot, { BOT_MODE: "polling" })))))

describe("polling mode", () => {
  it.live("deletes the webhook, then long-polls getUpdates, answers what it got and asks for the next offset", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("poller"))
      const standIn = yield* BotApiRecorder
      const first = sampleUpdate({ updateId: 7001, chatId: 7001, text: "polled one" })
      const second = sampleUpdate({ updateId: 7005, chatId: 7002, text: "polled two" })
      // The stand-in has no getUpdates of its own: the first poll returns two updates, the next
      // one is held open like a real long poll until the app stops.
      yield* standIn.script("getUpdates", [
        { status: 200, body: { ok: true, result: [first, second] } },
        { status: 200, body: { ok: true, result: [] }, delayMs: 120_000 }
      ])

      yield* Effect.gen(function*() {
        const calls = yield* standIn.awaitCalls((calls) => {
          const sent = replies(calls)
          return sent.includes(`7001:${replyTo("polled one")}`) && sent.includes(`7002:${replyTo("polled two")}`) &&
            calls.filter((call) => call.method === "getUpdates").length >= 2
        }, "20 seconds")
        const methods = calls.map((call) => call.method)
        assert.isAtLeast(methods.indexOf("deleteWebhook"), 0)
        assert.isBelow(methods.indexOf("deleteWebhook"), methods.indexOf("getUpdates"))
        assert.notInclude(methods, "setWebhook")
        const polls = calls.filter((call) => call.method === "getUpdates")
        assert.notProperty(polls[0]?.params ?? {}, "offset")
        assert.strictEqual(polls[1]?.params["offset"], second.update_id + 1)
        assert.strictEqual(polls.length, 2, "the second poll is still open")
      }).pipe(Effect.provide(pollingApp(url, standIn.url)))
    }).pipe(Effect.provide(BotApiRecorder.layer())))

  it.live(
    "an update fetched but not stored is not confirmed: the next getUpdates asks from it again, and it is answered",
    () =>
      Effect.gen(function*() {
        const url = yield* Effect.promise(() => freshDatabase("poller_store_fails"))
        const pg = yield* pgProbe(url)
        // The schema first, so the fault can be planted before the poller's first getUpdates.
        yield* Effect.scoped(Layer.build(Database.layerUrl(Redacted.make(url), 2)))
        const first = sampleUpdate({ updateId: 7101, chatId: 7101, text: "stored" })
        const second = sampleUpdate({ updateId: 7102, chatId: 7102, text: "not stored at first" })
        // Storing the second update fails once, between getUpdates and the store, as a transient
        // fault would (a sequence is not rolled back with the failed insert).
        yield* pg.query(`CREATE SEQUENCE store_fault`)
        yield* pg.query(`
        CREATE FUNCTION store_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.update_id = ${second.update_id} AND nextval('store_fault') = 1 THEN
            RAISE EXCEPTION 'injected: storing update % fails', NEW.update_id USING ERRCODE = 'serialization_failure';
          END IF;
          RETURN NEW;
        END $$`)
        yield* pg.query(`CREATE TRIGGER store_fault BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION store_fault()`)

        const standIn = yield* BotApiRecorder
        // Like Telegram: an update not confirmed by a later offset is returned again.
        yield* standIn.script("getUpdates", [
          { status: 200, body: { ok: true, result: [first, second] } },
          { status: 200, body: { ok: true, result: [second] } },
          { status: 200, body: { ok: true, result: [] }, delayMs: 120_000 }
        ])

        yield* Effect.gen(function*() {
          const calls = yield* standIn.awaitCalls((calls) => {
            const sent = replies(calls)
            return sent.includes(`7101:${replyTo("stored")}`) && sent.includes(`7102:${replyTo("not stored at first")}`) &&
              calls.filter((call) => call.method === "getUpdates").length >= 3
          }, "30 seconds")
          const offsets = calls.filter((call) => call.method === "getUpdates").map((call) => call.params["offset"])
          assert.deepStrictEqual(
            offsets,
            [undefined, first.update_id + 1, second.update_id + 1],
            "the offset moved past each update only once it was stored"
          )
        }).pipe(Effect.provide(pollingApp(url, standIn.url)))
      }).pipe(Effect.provide(BotApiRecorder.layer())),
    60_000
  )

  it.live("an empty getUpdates answered at once waits at least 1 s before the next poll", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(() => freshDatabase("poller_empty"))
      const standIn = yield* BotApiRecorder
      // Unscripted, the stand-in answers getUpdates with [] at once: a loop without a pause would spin.
      yield* Effect.gen(function*() {
        const calls = yield* standIn.awaitCalls(
          (calls) => calls.filter((call) => call.method === "getUpdates").length >= 4,
          "20 seconds"
        )
        const at = calls.filter((call) => call.method === "getUpdates").map((call) => call.at)
        const gaps = at.slice(1).map((t, i) => t - at[i]!)
        // Measured where the requests arrive: each arrival may be late by a busy machine's scheduling,
        // which shortens the next gap by as much. A loop without the pause polls within milliseconds.
        for (const gap of gaps) assert.isAtLeast(gap, Duration.toMillis(MIN_EMPTY_POLL) - 150, `gaps: ${gaps.join(", ")} ms`)
      }).pipe(Effect.provide(pollingApp(url, standIn.url)))
    }).pipe(Effect.provide(BotApiRecorder.layer())), 60_000)
})
