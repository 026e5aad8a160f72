import { assert, describe, it } from "@effect/vitest"
import { Cause } from "effect"
import { describeFault } from "../../src/http/HealthFault.ts"

/** An error shaped like the driver's: a tagged error whose reason wraps a cause chain. */
const sqlError = (reasonTag: string, cause: unknown) => ({ _tag: "SqlError", reason: { _tag: reasonTag, cause } })

describe("describeFault", () => {
  it("names the fault a reader can act on", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" })
    assert.strictEqual(describeFault(Cause.fail(sqlError("ConnectionError", refused))), "connection refused")
    assert.strictEqual(describeFault(Cause.fail(sqlError("UnknownError", { code: "28P01" }))), "authentication failed")
    assert.strictEqual(describeFault(Cause.fail(sqlError("AuthenticationError", undefined))), "authentication failed")
    assert.strictEqual(describeFault(Cause.fail(sqlError("StatementTimeoutError", { code: "57014" }))), "statement timed out")
    assert.strictEqual(describeFault(Cause.fail(sqlError("UnknownError", { code: "57P01" }))), "server shutting down")
    assert.strictEqual(describeFault(Cause.fail({ _tag: "PoolTimeout", waitedMs: 80 })), "no connection free in time")
  })

  it("anything else is its own text, without URLs", () => {
    const odd = new Error("getaddrinfo failed for postgres://app:pw@db.internal:5432/app")
    const text = describeFault(Cause.fail(sqlError("ConnectionError", odd)))
    assert.include(text, "postgres://db.internal:5432")
    assert.notInclude(text, "pw")
  })
})
