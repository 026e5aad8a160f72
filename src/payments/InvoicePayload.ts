import { Option, Redacted } from "effect"
import { createHmac, timingSafeEqual } from "node:crypto"

// `o<order id>.<mac>`: the MAC is HMAC-SHA256 over the order id, truncated to 128 bits, so the
// payload fits Telegram's 128-byte limit and cannot be forged or pointed at another order
// without the key. It only proves that we issued it: the order row decides everything else.
const FORMAT = /^o([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{22})$/
const MAC_BYTES = 16

const mac = (secret: Redacted.Redacted<string>, orderId: bigint): string =>
  createHmac("sha256", Redacted.value(secret)).update(`order:${orderId}`).digest().subarray(0, MAC_BYTES).toString("base64url")

export const signOrderPayload = (secret: Redacted.Redacted<string>, orderId: bigint): string => `o${orderId}.${mac(secret, orderId)}`

/** The order id of a payload we signed; none for anything forged, tampered with or malformed. */
export const verifyOrderPayload = (secret: Redacted.Redacted<string>, payload: string): Option.Option<bigint> => {
  const match = FORMAT.exec(payload)
  if (match === null) return Option.none()
  const orderId = BigInt(match[1]!)
  if (orderId > 9_223_372_036_854_775_807n) return Option.none()
  // Compared as text: base64url decoding ignores the last character's spare bits, the text does not.
  return timingSafeEqual(Buffer.from(match[2]!), Buffer.from(mac(secret, orderId))) ? Option.some(orderId) : Option.none()
}
