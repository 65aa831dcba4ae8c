return { name = "azure", fields = { { config = { type = "record", fields = {} } } } }
