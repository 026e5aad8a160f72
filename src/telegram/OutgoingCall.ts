/** A Bot API call a handler asked for; written to the outbox when the update finishes. */
export interface OutgoingCall {
  readonly chatKey: string
  readonly method: string
  readonly payload: Record<string, unknown>
  /** The span that asked for it, so the delivery joins the same trace. */
  readonly traceparent: string | null
}
