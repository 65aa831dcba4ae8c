return { name = "conjur", fields = { { config = { type = "record", fields = {} } } } }
