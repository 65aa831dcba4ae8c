-- Idempotent: a database that Kong Enterprise already created these tables in
-- (same names and columns) is accepted as it is.
return {
  postgres = {
    up = [[
      CREATE TABLE IF NOT EXISTS "keyring_meta" (
        "id"          TEXT PRIMARY KEY,
        "state"       TEXT NOT NULL,
        "kcv"         TEXT,
        "created_at"  TIMESTAMP WITH TIME ZONE DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
        "updated_at"  TIMESTAMP WITH TIME ZONE DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC')
      );

      DO $$
      BEGIN
        ALTER TABLE IF EXISTS ONLY "keyring_meta" ADD "kcv" TEXT;
      EXCEPTION WHEN DUPLICATE_COLUMN THEN
        -- already there
      END;
      $$;

      CREATE UNIQUE INDEX IF NOT EXISTS "keyring_meta_one_active_idx"
        ON "keyring_meta" ("state") WHERE "state" = 'active';

      CREATE TABLE IF NOT EXISTS "keyring_keys" (
        "id"               TEXT PRIMARY KEY,
        "key_encrypted"    TEXT NOT NULL,
        "recovery_key_id"  TEXT NOT NULL,
        "created_at"       TIMESTAMP WITH TIME ZONE DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC'),
        "updated_at"       TIMESTAMP WITH TIME ZONE DEFAULT (CURRENT_TIMESTAMP(0) AT TIME ZONE 'UTC')
      );
    ]],
  },
}
