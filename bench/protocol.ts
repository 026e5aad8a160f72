// What the load driver and the bench stand-in agree on.

/** Plain-text updates carry their update id, so the quoted reply names the update it answers. */
export const taggedText = (updateId: number, chatId: number): string => `bench message #u${updateId} from chat ${chatId}`

/** The update id quoted in a reply, if any. */
export const replyTag = (text: string): number | undefined => {
  const match = /#u(\d+)/.exec(text)
  return match === null ? undefined : Number(match[1])
}

/** GET /__stats: counters only, cheap to poll. Times are ms since the epoch (same host clock). */
export interface StatsSnapshot {
  readonly sendMessage: number
  readonly taggedDistinct: number
  readonly duplicates: number
  readonly untagged: number
  readonly otherCalls: number
  readonly badCalls: number
  readonly firstAt: number
  readonly lastAt: number
}

/** GET /__replies: every recorded reply's arrival times. */
export interface RepliesSnapshot extends StatsSnapshot {
  /** [update id, arrival times] for replies quoting an update. */
  readonly tagged: ReadonlyArray<readonly [number, ReadonlyArray<number>]>
  /** [chat id, arrival times] for replies without a tag (/start greetings). */
  readonly untaggedByChat: ReadonlyArray<readonly [number, ReadonlyArray<number>]>
}

export const isStatsSnapshot = (value: unknown): value is StatsSnapshot =>
  typeof value === "object" && value !== null && "sendMessage" in value && "taggedDistinct" in value

export const isRepliesSnapshot = (value: unknown): value is RepliesSnapshot =>
  isStatsSnapshot(value) && "tagged" in value && Array.isArray(value.tagged) && "untaggedByChat" in value

/** An invoice the stand-in received through sendInvoice (arrival time: Date.now() in the stand-in). */
export interface InvoiceRecord {
  readonly chatId: number
  readonly payload: string
  readonly currency: string
  /** Sum of the invoice's prices. */
  readonly amount: number
  readonly at: number
}

/** An answerPreCheckoutQuery call the stand-in received (arrival time: Date.now() in the stand-in). */
export interface PreCheckoutAnswerRecord {
  readonly id: string
  readonly ok: boolean
  readonly errorMessage: string | undefined
  readonly at: number
}

/** GET /__payments: every sendInvoice and answerPreCheckoutQuery call so far. */
export interface PaymentsSnapshot {
  readonly invoices: ReadonlyArray<InvoiceRecord>
  readonly preCheckoutAnswers: ReadonlyArray<PreCheckoutAnswerRecord>
}

export const isPaymentsSnapshot = (value: unknown): value is PaymentsSnapshot =>
  typeof value === "object" && value !== null && "invoices" in value && Array.isArray(value.invoices) &&
  "preCheckoutAnswers" in value && Array.isArray(value.preCheckoutAnswers)
