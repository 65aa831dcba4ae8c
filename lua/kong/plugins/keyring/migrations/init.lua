return {
  "000_base_keyring",
  "001_cluster_nodes",
  "002_rewrap",
}
