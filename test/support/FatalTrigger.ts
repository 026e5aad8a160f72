// Preloaded into a service process (NODE_OPTIONS=--import) so a test can make an error escape
// every Effect boundary on demand: SIGWINCH throws (or rejects, with STEADFAST_TEST_FATAL=rejection)
// outside any fiber, which only the process-level handlers can see.
process.on("SIGWINCH", () => {
  const error = new Error("fatal-trigger: escaped every boundary")
  if (process.env["STEADFAST_TEST_FATAL"] === "rejection") void Promise.reject(error)
  else throw error
})
