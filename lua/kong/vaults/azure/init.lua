return { VERSION = "0.1.0", get = function() return nil, "not yet" end }
