import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["./test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Most files wait on PostgreSQL, HTTP and child processes rather than compute: on a 2-core
    // machine three at once take about half the time of one, without starving any of them.
    maxWorkers: 3
  }
})
