-- Stored-data rotation (docs/design.md, "Rewrap"): the rewrap job (one live
-- job per cluster: a unique index over running and paused jobs) and the
-- cluster-wide encryption count of each key (the nonce budget).
return {
  postgres = {
    up = [[
      CREATE TABLE IF NOT EXISTS "keyring_rewrap" (
        "id"              UUID PRIMARY KEY,
        "state"           TEXT NOT NULL,
        "target"          TEXT,
        "from_key"        TEXT,
        "rate"            INTEGER,
        "tables"          TEXT,
        "node_id"         TEXT,
        "runner"          TEXT,
        "heartbeat"       TIMESTAMP WITH TIME ZONE,
        "checkpoint"      JSONB NOT NULL DEFAULT '{}'::jsonb,
        "progress"        JSONB NOT NULL DEFAULT '{}'::jsonb,
        "errors"          JSONB NOT NULL DEFAULT '[]'::jsonb,
        "rows_done"       BIGINT NOT NULL DEFAULT 0,
        "rows_total"      BIGINT NOT NULL DEFAULT 0,
        "rewritten"       BIGINT NOT NULL DEFAULT 0,
        "run_rows"        BIGINT NOT NULL DEFAULT 0,
        "run_started_at"  TIMESTAMP WITH TIME ZONE,
        "started_at"      TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
        "updated_at"      TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
        "finished_at"     TIMESTAMP WITH TIME ZONE
      );

      CREATE UNIQUE INDEX IF NOT EXISTS "keyring_rewrap_one_live"
        ON "keyring_rewrap" ((state IN ('running', 'paused'))) WHERE state IN ('running', 'paused');

      ALTER TABLE IF EXISTS ONLY "keyring_meta" ADD COLUMN IF NOT EXISTS "encryptions" BIGINT NOT NULL DEFAULT 0;
    ]],
  },
}
