import { assert, describe, it } from "@effect/vitest"
import { redactUrls } from "../../src/telegram/RedactUrls.ts"

const TOKEN = "123456789:AAHsecretTokenPart_xyz"

describe("redactUrls", () => {
  it("keeps scheme and host, drops userinfo, path, query and fragment", () => {
    assert.strictEqual(
      redactUrls(`request to http://user:proxypass@127.0.0.1:9/bot${TOKEN}/getWebhookInfo?x=1#f failed, reason: ECONNREFUSED`),
      "request to http://127.0.0.1:9 failed, reason: ECONNREFUSED"
    )
    assert.strictEqual(redactUrls("see https://api.telegram.org/bot1:x/sendMessage"), "see https://api.telegram.org")
    assert.strictEqual(redactUrls("postgres://steadfast:pw@db:5432/steadfast?sslmode=require"), "postgres://db:5432")
  })

  it("reduces every URL in the text and leaves the rest as it was", () => {
    const text = "first http://a.example/p?q=1, then (https://u@b.example:8443/x) and 'ws://c/d'."
    assert.strictEqual(redactUrls(text), "first http://a.example, then (https://b.example:8443) and 'ws://c'.")
    assert.strictEqual(redactUrls("no URL here: 429 Too Many Requests"), "no URL here: 429 Too Many Requests")
  })

  it("an @ in the path or query is not taken for userinfo, and IPv6 hosts survive", () => {
    assert.strictEqual(redactUrls("http://h.example/a@b/c"), "http://h.example")
    assert.strictEqual(redactUrls("http://h.example?mail=x@y"), "http://h.example")
    assert.strictEqual(redactUrls("http://u:p@[::1]:8080/bot1:t/getMe"), "http://[::1]:8080")
  })

  it("nothing of the userinfo, the token or the path is left", () => {
    const out = redactUrls(`GET https://alice:s3cr3t@proxy.example:3128/bot${TOKEN}/getUpdates?offset=5 failed`)
    for (const part of ["alice", "s3cr3t", TOKEN, "AAHsecretTokenPart_xyz", "getUpdates", "offset"]) assert.notInclude(out, part)
  })
})
