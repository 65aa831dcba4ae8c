return { name = "gcp", fields = { { config = { type = "record", fields = {} } } } }
