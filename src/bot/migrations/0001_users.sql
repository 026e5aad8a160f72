-- The shipped bot's users, recorded by /start (src/bot/handlers/Basics.ts).
-- IF NOT EXISTS: databases from before the bot had its own migrations already have it.
-- Telegram ids exceed 2^31: bigint.
CREATE TABLE IF NOT EXISTS users (
  telegram_id bigint PRIMARY KEY,
  username text,
  first_name text,
  language_code text,
  first_seen timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now()
);
