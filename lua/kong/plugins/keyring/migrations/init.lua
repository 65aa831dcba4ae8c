return {
  "000_base_keyring",
  "001_cluster_nodes",
}
