// One line of src/ per guarantee whose removal its test must notice. `search` must occur exactly
// once in `file`; run.ts replaces it with `replace` in a scratch copy and runs `test`.
export interface Mutation {
  readonly name: string
  /** The guarantee the mutation breaks. */
  readonly breaks: string
  readonly file: string
  readonly search: string
  readonly replace: string
  readonly test: string
}

export const mutations: ReadonlyArray<Mutation> = [
  {
    name: "finish-ignores-lease",
    breaks: "lease fencing: the finishing statement no longer checks the lease",
    file: "src/inbox/Inbox.ts",
    search: "WHERE update_id = ${update.updateId} AND lease_id = ${update.leaseId}::uuid\n              RETURNING update_id",
    replace: "WHERE update_id = ${update.updateId}\n              RETURNING update_id",
    test: "test/inbox/LeaseFencing.test.ts"
  },
  {
    name: "lost-lease-commits",
    breaks: "lease fencing: a finish that matched no row is ignored and the transaction commits",
    file: "src/inbox/Dispatcher.ts",
    search: "if (!(yield* inbox.finish(update, result.status, result.calls, yield* currentTraceId))) {",
    replace: "if (!(yield* inbox.finish(update, result.status, result.calls, yield* currentTraceId)) && false) {",
    test: "test/inbox/LeaseFencing.test.ts"
  }
]
