// Run as its own process (`node test/support/HealthPoller.ts <url>`): GETs the URL every 100 ms
// and prints one JSON line per answer ({ status, elapsedMs, body }) until stdin closes. Kept out
// of the test's process so the test's own work (posting a burst) never delays a measurement.
const url = process.argv[2]!
let running = true
process.stdin.on("close", () => void (running = false))
process.stdin.resume()
// The first request sets up this process's HTTP client: not measured.
await fetch(url).then((response) => response.text())
while (running) {
  const startedAt = performance.now()
  const response = await fetch(url)
  const body = await response.text()
  process.stdout.write(`${JSON.stringify({ status: response.status, elapsedMs: performance.now() - startedAt, body })}\n`)
  await new Promise((resolve) => setTimeout(resolve, 100))
}
