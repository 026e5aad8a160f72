import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

// Telegram Stars payments. Money safety rests on constraints, not on code paths:
// - a charge id is recorded once (payments primary key, orders UNIQUE), so a redelivered
//   successful_payment finds its row taken and credits nothing;
// - the ledger holds at most one purchase credit and one refund debit per charge;
// - balances.credits is the sum of the user's ledger, kept in the same transaction as each entry.
export default Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE orders (
      id bigserial PRIMARY KEY,
      user_id bigint NOT NULL,
      chat_id bigint NOT NULL,
      product text NOT NULL,
      credits integer NOT NULL CHECK (credits > 0),
      amount integer NOT NULL CHECK (amount > 0),
      currency text NOT NULL,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'refunded')),
      telegram_payment_charge_id text UNIQUE,
      update_id bigint,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      paid_at timestamptz,
      CHECK ((status = 'pending') = (telegram_payment_charge_id IS NULL))
    )`
  yield* sql`CREATE INDEX orders_by_user ON orders (user_id, id DESC)`

  // Every successful_payment Telegram reports, matched to an order or not: money taken is never dropped.
  yield* sql`
    CREATE TABLE payments (
      telegram_payment_charge_id text PRIMARY KEY,
      provider_payment_charge_id text,
      user_id bigint NOT NULL,
      chat_id bigint NOT NULL,
      order_id bigint REFERENCES orders (id),
      invoice_payload text NOT NULL,
      currency text NOT NULL,
      total_amount integer NOT NULL,
      credits integer NOT NULL DEFAULT 0 CHECK (credits >= 0),
      status text NOT NULL CHECK (status IN ('credited', 'needs_support', 'refunded')),
      support_reason text,
      update_id bigint NOT NULL,
      received_at timestamptz NOT NULL DEFAULT now(),
      refunded_at timestamptz,
      CHECK ((status = 'needs_support') = (support_reason IS NOT NULL) OR status = 'refunded')
    )`
  yield* sql`CREATE INDEX payments_by_user ON payments (user_id, received_at DESC)`
  yield* sql`CREATE INDEX payments_needing_support ON payments (received_at) WHERE status = 'needs_support'`

  yield* sql`
    CREATE TABLE ledger (
      id bigserial PRIMARY KEY,
      user_id bigint NOT NULL,
      delta bigint NOT NULL CHECK (delta <> 0),
      kind text NOT NULL CHECK (kind IN ('purchase', 'refund')),
      telegram_payment_charge_id text NOT NULL REFERENCES payments (telegram_payment_charge_id),
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (telegram_payment_charge_id, kind)
    )`
  yield* sql`CREATE INDEX ledger_by_user ON ledger (user_id)`

  yield* sql`
    CREATE TABLE balances (
      user_id bigint PRIMARY KEY,
      credits bigint NOT NULL CHECK (credits >= 0),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`
})
