-- Per-process plugin state shared by the handler, the transformations and the
-- Admin API: the validated settings and the strategy in use.

return {
  conf = { keyring_enabled = false, keyring_strategy = "cluster" },
  strategy = nil,
}
