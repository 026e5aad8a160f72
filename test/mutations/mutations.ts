// One line of src/ per guarantee whose removal its test must notice (more where the guarantee is
// held twice). Each `search` must occur exactly once in its file; run.ts replaces it with
// `replace` in a scratch copy and runs `test`.
export interface Edit {
  readonly file: string
  readonly search: string
  readonly replace: string
}

export interface Mutation extends Edit {
  readonly name: string
  /** The guarantee the mutation breaks. */
  readonly breaks: string
  /** Further edits, where a guarantee is held by more than one line (defence in depth). */
  readonly also?: ReadonlyArray<Edit>
  readonly test: string
  /** Only the tests whose names contain this (vitest -t). */
  readonly testName?: string
}

export const mutations: ReadonlyArray<Mutation> = [
  {
    name: "finish-ignores-lease",
    breaks: "lease fencing: the finishing statement no longer checks the lease",
    file: "src/queue/Finish.ts",
    search: "WHERE inbox.update_id = i.update_id AND inbox.lease_id = i.lease_id",
    replace: "WHERE inbox.update_id = i.update_id",
    test: "test/queue/LeaseFencing.test.ts"
  },
  {
    name: "lost-lease-commits",
    breaks: "lease fencing: a finish that matched no row is ignored and the transaction commits",
    file: "src/queue/Dispatcher.ts",
    search: "if (Option.isNone(finished)) return yield* new LeaseLost()",
    replace: "if (Option.isNone(finished)) return { result, finished: { next: Option.none(), calls: [] } }",
    test: "test/queue/LeaseFencing.test.ts"
  },
  {
    name: "chat-runs-beside-itself",
    breaks: "per-chat order: a chat's next update is claimable (from the table) while its previous one is still processing",
    file: "src/queue/Inbox.ts",
    search: "WHERE e.chat_key = i.chat_key AND e.status IN ('pending', 'processing'))",
    replace: "WHERE e.chat_key = i.chat_key AND e.status = 'pending')",
    test: "test/queue/Ordering.test.ts",
    testName: "a claim never takes"
  },
  {
    name: "handed-off-runs-beside-itself",
    breaks: "per-chat order: an update handed off in memory starts while its chat's previous one is still running",
    file: "src/queue/ChatScheduler.ts",
    search: "if (chats.isRunning(item.chatKey)) {\n              chats.enqueue(item)",
    replace: "if (chats.isRunning(item.chatKey) && false) {\n              chats.enqueue(item)",
    test: "test/queue/Ordering.test.ts",
    testName: "waits, stored and ready"
  },
  {
    name: "handoff-past-backlog",
    breaks: "per-chat order: a new update is handed off in memory although its chat has pending updates in the table",
    file: "src/db/migrations/Functions.ts",
    search: "AND (e.status = 'pending' OR e.owner IS DISTINCT FROM me OR e.locked_until <= now())\n        LIMIT 1",
    replace: "AND e.locked_until <= now()\n        LIMIT 1",
    test: "test/queue/Ordering.test.ts",
    testName: "not overtaken"
  },
  {
    name: "probe-scans-claim-index",
    breaks: "the store's per-chat probe costs one index probe per update, not a scan of every open update, whatever the statistics say",
    file: "src/db/migrations/0013_store_probes.ts",
    search: "WHERE status IN ('pending', 'processing') AND attempts >= 0`",
    replace: "WHERE status IN ('pending', 'processing')`",
    test: "test/db/StoreCost.test.ts"
  },
  {
    name: "urgent-waits-in-line",
    breaks: "pre-checkout and shipping queries run before any backlog handed over in memory",
    file: "src/queue/HandOff.ts",
    search: "(options.isUrgent(item) ? waitingUrgent : waitingOther).push(item)",
    replace: "waitingOther.push(item)",
    test: "test/queue/BusyWorkers.test.ts",
    testName: "pre-checkout"
  },
  {
    name: "workers-take-whole-pool",
    breaks: "workers can never starve ingress: worker concurrency and the handlers' pool share both lifted to the pool size",
    file: "src/Config.ts",
    search: "const workerBudget = dbPoolMax - RESERVED_CONNECTIONS",
    replace: "const workerBudget = dbPoolMax",
    also: [{
      file: "src/db/Database.ts",
      search: "handler: yield* Semaphore.make(Math.max(1, max - RESERVED_CONNECTIONS)),",
      replace: "handler: yield* Semaphore.make(max),"
    }],
    test: "test/queue/BusyWorkers.test.ts",
    testName: "still stores"
  },
  {
    name: "offset-before-store",
    breaks: "polling offset: getUpdates confirms an update before it is stored",
    file: "src/http/Poller.ts",
    search: "for (const update of updates) {",
    replace: "for (const update of updates) {\n        offset = update.update_id + 1",
    test: "test/http/Poller.test.ts"
  },
  {
    name: "order-not-locked",
    breaks: "one payment per order: the order row is read without FOR UPDATE",
    file: "src/payments/Payments.ts",
    search: "FROM orders WHERE id = ${orderId.value}\n    FOR UPDATE`",
    replace: "FROM orders WHERE id = ${orderId.value}`",
    test: "test/payments/ExactlyOnce.test.ts",
    testName: "two different charges"
  },
  {
    name: "no-shutdown-grace",
    breaks: "SIGTERM drain: running handlers are interrupted at once instead of given SHUTDOWN_GRACE_MS",
    file: "src/queue/ChatScheduler.ts",
    search: "Effect.timeoutOption(FiberSet.awaitEmpty(workers), options.shutdownGrace)",
    replace: "Effect.timeoutOption(FiberSet.awaitEmpty(workers), Duration.zero)",
    test: "test/lifecycle/Shutdown.test.ts"
  },
  {
    name: "interrupted-update-kept",
    breaks: "SIGTERM drain: an update interrupted at shutdown keeps its lease instead of going back to pending",
    file: "src/queue/Dispatcher.ts",
    search: "Effect.onInterrupt(() => inbox.release(update).pipe(Effect.ignoreCause)),",
    replace: "Effect.onInterrupt(() => Effect.void),",
    test: "test/lifecycle/Shutdown.test.ts"
  },
  {
    name: "health-waits-for-database",
    breaks: "/health answers within its budget while PostgreSQL hangs: the check has no timeout",
    file: "src/http/HealthRoutes.ts",
    search: "Effect.timeoutOption(Fiber.await(fiber), CHECK_TIMEOUT)",
    replace: "Effect.asSome(Fiber.await(fiber))",
    test: "test/http/HealthStates.test.ts"
  },
  {
    name: "health-awaits-interruption",
    breaks: "/health answers within its budget while PostgreSQL hangs: a timed-out check's interruption is awaited",
    file: "src/http/HealthRoutes.ts",
    search: "yield* Effect.forkDetach(Fiber.interrupt(fiber))",
    replace: "yield* Fiber.interrupt(fiber)",
    test: "test/http/HealthStates.test.ts"
  },
  {
    name: "timeout-log-says-nothing",
    breaks: "a timed-out handler is logged with what it was doing",
    file: "src/queue/Dispatcher.ts",
    search: "timedOut = describeFiber(handler)",
    replace: "timedOut = \"\"",
    test: "test/queue/Timeout.test.ts"
  },
  {
    name: "handler-outlives-deadline",
    breaks: "a handler is interrupted at UPDATE_TIMEOUT_MS (its transaction rolls back, the update is retried)",
    file: "src/queue/Dispatcher.ts",
    search: "        handler.interruptUnsafe()\n",
    replace: "",
    test: "test/queue/Timeout.test.ts"
  },
  {
    name: "timed-store-waits-forever",
    breaks: "a timed store (the webhook's) gives up at STORE_TIMEOUT, so the webhook can answer 503",
    file: "src/queue/Batcher.ts",
    search: "deadline: timed ? deadlines?.start(() => Deferred.doneUnsafe(done, deadlines.expired)) : undefined",
    replace: "deadline: undefined",
    test: "test/queue/Batcher.test.ts"
  },
  {
    name: "settled-deadline-fires",
    breaks: "a deadline settled in time never fires",
    file: "src/queue/Deadlines.ts",
    search: "return { settle: () => void (entry.onExpire = undefined) }",
    replace: "return { settle: () => undefined }",
    test: "test/queue/Deadlines.test.ts"
  },
  {
    name: "fiber-dump-without-spans",
    breaks: "SIGUSR2 fiber dump lists what each tracked fiber is doing",
    file: "src/observability/FiberDump.ts",
    search: "${describeFiber(fiber)}`",
    replace: "`",
    test: "test/observability/FiberDump.test.ts"
  },
  {
    name: "recorded-result-ignored",
    breaks: "recorded calls: a re-run makes every call again instead of getting the recorded result",
    file: "src/bot/AttemptApi.ts",
    search: "if (earlier.method === method && earlier.digest === digestOf(body)) {",
    replace: "if (false) {",
    test: "test/queue/Retries.test.ts",
    testName: "recorded for the re-runs"
  },
  {
    name: "late-attempt-statement-allowed",
    breaks: "a finished attempt can do nothing more: a statement after its end opens a connection nobody closes",
    file: "src/db/LazyTransaction.ts",
    search: "        over ?\n",
    replace: "        false ?\n",
    test: "test/bot/DurableCalls.test.ts",
    testName: "outlives UPDATE_TIMEOUT_MS"
  },
  {
    name: "claim-count-unlimited",
    breaks: "an update that takes its process down on every run is claimed again forever instead of dead-lettered",
    file: "src/queue/Inbox.ts",
    search: "i.status = 'processing' AND i.attempts >= ${maxAttempts} AS dead",
    replace: "false AS dead",
    test: "test/queue/CrashCalls.test.ts",
    testName: "takes its process down"
  },
  {
    name: "outbox-retries-by-count",
    breaks: "an outage drops nothing: a transiently failing call is given up by a count of attempts, not by OUTBOX_MAX_AGE",
    file: "src/queue/Outbox.ts",
    search: "sql`created_at < now() - ${Duration.toMillis(retry.maxAge)} * interval '1 millisecond'`",
    replace: "sql`attempts >= 8`",
    test: "test/queue/Outage.test.ts",
    testName: "old 8-attempt limit"
  },
  {
    name: "repeated-warning-every-time",
    breaks: "a repeated infrastructure failure is logged once per interval, not at every occurrence",
    file: "src/observability/RepeatedWarning.ts",
    search: "if (now - loggedAt < interval) return",
    replace: "",
    test: "test/observability/RepeatedWarning.test.ts"
  },
  {
    name: "ops-look-migrates",
    breaks: "the ops commands that only look never migrate the database",
    file: "src/ops/TargetDatabase.ts",
    search: "layerReadOnly: layer(false)",
    replace: "layerReadOnly: layer(true)",
    test: "test/ops/cli.test.ts",
    testName: "never migrate"
  },
  {
    name: "sandbox-fallback",
    breaks: "a missing BOT_TOKEN with a DATABASE_URL falls back to sandbox mode against the real database",
    file: "src/Config.ts",
    search: "Option.isSome(token) || databaseSet ?",
    replace: "Option.isSome(token) ?",
    test: "test/config/Config.test.ts",
    testName: "sandbox mode only when asked for"
  },
  {
    name: "one-address-takes-all",
    breaks: "one remote address holds at most 100 sockets of the main port",
    file: "src/http/ListenerLimits.ts",
    search: "if (count >= cap) {",
    replace: "if (count < 0) {",
    test: "test/http/SlowClients.test.ts",
    testName: "one remote address"
  },
  {
    name: "urls-in-errors",
    breaks: "error texts carry no URLs: the Bot API's errors keep theirs",
    file: "src/telegram/BotApi.ts",
    search: "let scrubbed = redactUrls(text).replace(",
    replace: "let scrubbed = text.replace(",
    test: "test/telegram/ErrorsWithoutUrls.test.ts"
  },
  {
    name: "never-shed",
    breaks: "past MAX_OPEN_UPDATES the webhook answers 503",
    file: "src/http/WebhookRoute.ts",
    search: "if (openUpdates.full()) {",
    replace: "if (openUpdates.max < 0) {",
    test: "test/queue/Shedding.test.ts"
  },
  {
    name: "lease-renewal-on-background",
    breaks: "lease renewal has a connection no background statement can take",
    file: "src/queue/Inbox.ts",
    search: "undefined,\n          \"lease\"",
    replace: "undefined,\n          \"background\"",
    test: "test/db/LeaseStarvation.test.ts"
  },
  {
    name: "readiness-from-backlog",
    breaks: "a slow backlog count is warn, never fail",
    file: "src/http/HealthRoutes.ts",
    search: "\"inbox:backlog\": [{ status: \"warn\" as const, time: probedAt, output: `inbox not counted: ${backlog.output}` }],",
    replace: "\"inbox:backlog\": [{ status: \"fail\" as const, time: probedAt, output: `inbox not counted: ${backlog.output}` }],",
    test: "test/http/HealthStates.test.ts",
    testName: "backlog count that cannot finish"
  },
  {
    name: "fatal-exits-at-once",
    breaks: "a fatal error returns the leases before exiting",
    file: "src/Lifecycle.ts",
    search: "process.kill(process.pid, \"SIGTERM\")",
    replace: "process.exit(1)",
    test: "test/observability/FiberDump.test.ts",
    testName: "lease of the update"
  },
  {
    name: "refund-any-payer",
    breaks: "a refund is recorded only for its payer",
    file: "src/payments/Payments.ts",
    search: "AND user_id = ${payerId} AND status <> 'refunded'",
    replace: "AND status <> 'refunded'",
    test: "test/payments/PaymentFlow.test.ts",
    testName: "another user's charge id"
  }
]
