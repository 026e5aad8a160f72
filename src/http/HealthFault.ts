import { Cause, Predicate } from "effect"
import { redactUrls } from "../telegram/RedactUrls.ts"

const CODES: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ETIMEDOUT: "connect timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  EPIPE: "connection closed"
}

/** The errors a cause wraps, outermost first (`cause` chains, up to a few levels). */
const chain = (error: unknown): Array<unknown> => {
  const found: Array<unknown> = []
  let current = error
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth++) {
    found.push(current)
    current = Predicate.hasProperty(current, "reason") && depth === 0
      ? current.reason
      : Predicate.hasProperty(current, "cause")
      ? current.cause
      : undefined
  }
  return found
}

/**
 * What went wrong, in a few words a reader can act on: "connection refused", "authentication
 * failed", "statement timed out", rather than "did not answer in time". Never a URL, never a
 * secret: driver texts are reduced by `redactUrls`.
 */
export const describeFault = (cause: Cause.Cause<unknown>): string => {
  const error = cause.reasons.find(Cause.isFailReason)?.error ?? cause.reasons.find(Cause.isDieReason)?.defect
  if (error === undefined) return "interrupted"
  const links = chain(error)
  for (const link of links) {
    const code = Predicate.hasProperty(link, "code") && typeof link.code === "string" ? link.code : undefined
    if (code !== undefined && CODES[code] !== undefined) return CODES[code]
    // PostgreSQL's own codes: 28xxx authentication, 57014 statement cancelled (our limit), 57P0x shutting down.
    if (code?.startsWith("28")) return "authentication failed"
    if (code === "57014") return "statement timed out"
    if (code?.startsWith("57P")) return "server shutting down"
    const tag = Predicate.hasProperty(link, "_tag") ? link._tag : undefined
    if (tag === "AuthenticationError") return "authentication failed"
    if (tag === "StatementTimeoutError") return "statement timed out"
    if (tag === "PoolTimeout") return "no connection free in time"
  }
  const last = links[links.length - 1]
  const text = last instanceof Error ? last.message : String(last)
  return redactUrls(text).slice(0, 200)
}
