import { Effect, Schema } from "effect"

/**
 * Decodes a statement's rows with `schema`. A row of another shape means the SQL and the schema
 * disagree, which no retry fixes: a defect, reported with the schema's own message.
 */
export const decodeRows = <S extends Schema.Constraint & { readonly DecodingServices: never }>(schema: S) => {
  const decode = Schema.decodeUnknownEffect(Schema.Array(schema))
  return <E, R>(rows: Effect.Effect<ReadonlyArray<unknown>, E, R>): Effect.Effect<ReadonlyArray<S["Type"]>, E, R> =>
    Effect.flatMap(rows, (raw) => Effect.orDie(decode(raw)))
}
