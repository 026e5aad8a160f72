import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// What operators need to see and settle rows:
// - `discarded` (inbox and outbox): an operator gave up on a dead update or a failed call. The row
//   stays, so a redelivered update_id is still a no-op, and it is no longer open.
// - `expired` (outbox): a call that kept failing transiently (Telegram or the network away) for
//   longer than OUTBOX_MAX_AGE; an operator may requeue it.
// - `failure_history`: every failure recorded in `last_error`, which keeps only the latest. Filled by
//   triggers that fire only when a failure is written (a success clears `last_error` and costs
//   nothing), one row per run of identical errors with a count, so an outage of a day retrying every
//   minute is a handful of rows. Deleted with its update or call.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE inbox DROP CONSTRAINT inbox_status_check`
  yield* sql`ALTER TABLE inbox ADD CONSTRAINT inbox_status_check
    CHECK (status IN ('pending', 'processing', 'done', 'dead', 'skipped', 'discarded'))`
  yield* sql`ALTER TABLE outbox DROP CONSTRAINT outbox_status_check`
  yield* sql`ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'discarded'))`
  yield* sql`
    CREATE TABLE failure_history (
      id bigserial PRIMARY KEY,
      update_id bigint REFERENCES inbox (update_id) ON DELETE CASCADE,
      outbox_id bigint REFERENCES outbox (id) ON DELETE CASCADE,
      error text NOT NULL,
      first_attempt integer NOT NULL,
      last_attempt integer NOT NULL,
      times integer NOT NULL DEFAULT 1,
      first_at timestamptz NOT NULL DEFAULT now(),
      last_at timestamptz NOT NULL DEFAULT now(),
      CHECK ((update_id IS NULL) <> (outbox_id IS NULL))
    )`
  yield* sql`CREATE INDEX failure_history_update ON failure_history (update_id, id) WHERE update_id IS NOT NULL`
  yield* sql`CREATE INDEX failure_history_outbox ON failure_history (outbox_id, id) WHERE outbox_id IS NOT NULL`
  // One function per table: plpgsql resolves every NEW.column it meets, and inbox has no `id`.
  for (const [table, column, key] of [["inbox", "update_id", "update_id"], ["outbox", "outbox_id", "id"]] as const) {
    yield* sql.unsafe(`
      CREATE FUNCTION steadfast_record_${table}_failure() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE failure_history SET times = times + 1, last_attempt = NEW.attempts, last_at = now()
        WHERE id = (SELECT max(id) FROM failure_history WHERE ${column} = NEW.${key}) AND error = NEW.last_error;
        IF NOT FOUND THEN
          INSERT INTO failure_history (${column}, error, first_attempt, last_attempt)
          VALUES (NEW.${key}, NEW.last_error, NEW.attempts, NEW.attempts);
        END IF;
        RETURN NULL;
      END $$`)
  }
  for (const table of ["inbox", "outbox"]) {
    yield* sql.unsafe(`
      CREATE TRIGGER ${table}_failure_history AFTER UPDATE OF last_error ON ${table}
      FOR EACH ROW WHEN (NEW.last_error IS NOT NULL) EXECUTE FUNCTION steadfast_record_${table}_failure()`)
  }
})
