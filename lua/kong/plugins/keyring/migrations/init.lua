return {
  "000_base_keyring",
}
