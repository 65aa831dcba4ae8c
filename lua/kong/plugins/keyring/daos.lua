-- The plugin's own tables (docs/design.md, "Tables"). Internal: no generated
-- Admin API, no declarative export (a data plane must never receive wrapped
-- keys).

local timestamp = { type = "integer", timestamp = true, auto = true }

return {
  {
    name = "keyring_meta",
    primary_key = { "id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { id = { type = "string", required = true } },
      -- "tombstoned" is tolerated in rows written by Kong Enterprise
      { state = { type = "string", required = true, one_of = { "active", "alive", "tombstoned" } } },
      { kcv = { type = "string" } },
      { created_at = timestamp },
      { updated_at = timestamp },
    },
  },
  {
    name = "keyring_keys",
    primary_key = { "id" },
    generate_admin_api = false,
    db_export = false,
    workspaceable = false,
    fields = {
      { id = { type = "string", required = true } },
      { key_encrypted = { type = "string", required = true } },
      { recovery_key_id = { type = "string", required = true } },
      { created_at = timestamp },
      { updated_at = timestamp },
    },
  },
}
