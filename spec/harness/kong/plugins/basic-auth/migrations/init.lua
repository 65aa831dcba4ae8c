return {
  "000_base_basic_auth",
}
