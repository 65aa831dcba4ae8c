-- The cluster strategy's node table and message authentication
-- (docs/design.md, "Cluster strategy"): every node's ephemeral public key,
-- the ids it holds and its heartbeat; `mac` columns carry an HMAC under
-- `keyring_cluster_secret` when one is set. `instance` (host and prefix)
-- names a node across restarts: Kong gives a restarted node a new id.
return {
  postgres = {
    up = [[
      CREATE TABLE IF NOT EXISTS "keyring_nodes" (
        "node_id"     TEXT PRIMARY KEY,
        "instance"    TEXT,
        "hostname"    TEXT,
        "public_key"  TEXT NOT NULL,
        "key_ids"     TEXT NOT NULL DEFAULT '',
        "mac"         TEXT,
        "last_seen"   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
      );

      ALTER TABLE IF EXISTS ONLY "keyring_meta" ADD COLUMN IF NOT EXISTS "mac" TEXT;
    ]],
  },
}
