-- kong.keyring: export / import blobs, recovery rows and public key ids
-- (docs/formats.md, "Export blob v2", "Export blob v1", "Recovery rows").
-- Kong Enterprise artifacts are built here with the openssl CLI and luaossl,
-- independently of the library.

local cjson = require "cjson.safe"
local cipher = require "openssl.cipher"
local rand = require "openssl.rand"
local helpers = require "helpers"
local keyring = require "kong.keyring"


local CONTEXT = "keyring_keys:9a1f3c2e-51d7-4a8b-8e0f-2b6c7d9e0a13"
local TMP = helpers.tmp .. "/unit-wrap"

-- Fixed test keys (not secrets): "0123456789abcdef" twice, and 32 bytes of 0xff
-- whose base64 is made of '/', which EE's JSON may escape as '\/'.
local TEST_KEY_RAW = "0123456789abcdef0123456789abcdef"
local FF_KEY_B64 = string.rep("/", 42) .. "8="


local function pack(...)
  return { n = select("#", ...), ... }
end


local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end


local function to_hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end


local function kcv(raw_key)
  return to_hex(require("openssl.hmac").new(raw_key, "sha256"):final("kong-keyring-kcv")):sub(1, 32)
end


local n_files = 0
local function tmp_file(data)
  n_files = n_files + 1
  local path = TMP .. "/f" .. n_files
  helpers.write_file(path, data)
  return path
end


local function sh(cmd)
  local ok, out = helpers.run(cmd)
  assert(ok, out)
  return out
end


-- The public key of `priv_pem` as PKCS#1 "RSA PUBLIC KEY" PEM.
local function pkcs1_public(priv_pem)
  local out = TMP .. "/pkcs1.pub"
  sh("openssl rsa -in " .. tmp_file(priv_pem) .. " -RSAPublicKey_out -out " .. out)
  return helpers.read_file(out)
end


local function b64enc(data)
  return sh("base64 -w0 " .. tmp_file(data))
end


local function b64dec(text)
  return sh("base64 -d " .. tmp_file(text))
end


-- RSA encryption of `data` for the public key in `pub_pem` with the openssl CLI.
local function rsa_encrypt(pub_pem, data, oaep)
  local opts = oaep and "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256"
               or "-pkeyopt rsa_padding_mode:pkcs1"
  local out = TMP .. "/rsa.out"
  sh("openssl pkeyutl -encrypt -pubin -inkey " .. tmp_file(pub_pem) .. " " .. opts
     .. " -in " .. tmp_file(data) .. " -out " .. out)
  return helpers.read_file(out)
end


-- Runs `script` in a fresh luajit with this tree's paths; returns its stdout.
local function run_fresh(script)
  return sh("cd " .. helpers.shell_quote(helpers.root)
            .. " && LUA_PATH=" .. helpers.shell_quote(helpers.lua_path .. ";;")
            .. " LUA_CPATH=" .. helpers.shell_quote(helpers.lua_cpath .. ";;")
            .. " luajit -e " .. helpers.shell_quote(script))
end


describe("keyring (export, import, recovery)", function()
  local id, other
  local priv, pub, priv2, pub2, priv1k, pub1k

  lazy_setup(function()
    assert(keyring.init())
    assert(keyring.init_worker())
    os.execute("rm -rf " .. TMP .. " && mkdir -p " .. TMP)
    id = helpers.generate_key()
    other = helpers.generate_key()
    assert(keyring.activate(id))
    priv, pub = helpers.rsa_pair(2048)
    priv2, pub2 = helpers.rsa_pair(2048)
    priv1k, pub1k = helpers.rsa_pair(1024)
  end)

  lazy_teardown(function()
    os.execute("rm -rf " .. TMP)
  end)

  before_each(function()
    assert(keyring.activate(id))
  end)

  after_each(function()
    assert(keyring.init({}))
  end)


  describe("export", function()
    it("returns the base64 of a JSON envelope { v = 2, k, n, d }", function()
      local blob = assert(keyring.export(pub))
      assert.truthy(blob:match("^[A-Za-z0-9+/]+=*$"))
      local envelope = cjson.decode(b64dec(blob))
      assert.equals(2, envelope.v)
      assert.same({ "d", "k", "n", "v" }, (function()
        local names = {}
        for k in pairs(envelope) do
          names[#names + 1] = k
        end
        table.sort(names)
        return names
      end)())
      assert.equals(12, #b64dec(envelope.n))
      assert.equals(256, #b64dec(envelope.k))
    end)

    it("writes Kong Enterprise's v1 envelope { k, n, d } in v1 mode", function()
      assert(keyring.init({ write_format = "v1" }))
      local envelope = cjson.decode(b64dec(assert(keyring.export(pub))))
      assert.is_nil(envelope.v)
      assert.equals("string", type(envelope.k))
      assert.equals(12, #b64dec(envelope.n))
      assert.equals("string", type(envelope.d))
    end)

    it("accepts the base64 of a PEM public key", function()
      local blob = assert(keyring.export(b64enc(pub)))
      assert.equals(id, assert(keyring.import(blob, priv)).active)
    end)

    it("accepts a PKCS#1 'RSA PUBLIC KEY' PEM", function()
      local pkcs1 = pkcs1_public(priv)
      assert.equals("-----BEGIN RSA PUBLIC KEY-----", pkcs1:sub(1, 30))
      local blob = assert(keyring.export(pkcs1))
      assert.equals(id, assert(keyring.import(blob, priv)).active)
    end)

    it("answers nil, err for a private key where a public key is needed", function()
      assert.same({ n = 3, nil, "expected an RSA public key, got a private key", "invalid" }, pack(keyring.export(priv)))
    end)

    it("answers nil, err for a 1024-bit key", function()
      assert.same({ n = 3, nil, "RSA key too small (1024 bits, at least 2048 required)", "invalid" },
                  pack(keyring.export(pub1k)))
    end)

    it("answers nil, err for text that is not a PEM key", function()
      assert.same({ n = 3, nil, "not a PEM key or base64 of a PEM key", "invalid" }, pack(keyring.export("no key here")))
    end)

    it("answers nil, err for an empty string", function()
      assert.same({ n = 3, nil, "not a PEM key or base64 of a PEM key", "invalid" }, pack(keyring.export("")))
    end)

    it("answers nil, err for a PEM that is not a key", function()
      local cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
      assert.same({ n = 3, nil, "expected an RSA public key PEM (PUBLIC KEY or RSA PUBLIC KEY)", "invalid" },
                  pack(keyring.export(cert)))
    end)
  end)


  describe("import", function()
    it("returns the ids and the active id of the exported ring", function()
      local ring = assert(keyring.import(assert(keyring.export(pub)), priv))
      assert.equals(id, ring.active)
      assert.is_true(contains(ring.ids, id))
      assert.is_true(contains(ring.ids, other))
      assert.equals(#keyring.keys().ids, #ring.ids)
    end)

    it("keeps decrypting values after importing keys already present", function()
      local value = assert(keyring.encrypt("kept", CONTEXT))
      assert(keyring.import(assert(keyring.export(pub)), priv))
      assert.equals("kept", keyring.decrypt(value, CONTEXT))
    end)

    it("activates the blob's active key", function()
      local blob = assert(keyring.export(pub))
      assert(keyring.activate(other))
      assert(keyring.import(blob, priv))
      assert.equals(id, keyring.active_id())
    end)

    it("imports a v1 blob written in v1 mode", function()
      assert(keyring.init({ write_format = "v1" }))
      local blob = assert(keyring.export(pub))
      assert(keyring.init({}))
      assert.equals(id, assert(keyring.import(blob, priv)).active)
    end)

    it("accepts the base64 of a PEM private key", function()
      local blob = assert(keyring.export(pub))
      assert.equals(id, assert(keyring.import(blob, b64enc(priv))).active)
    end)

    it("accepts a blob split over lines", function()
      local blob = assert(keyring.export(pub))
      local wrapped = blob:gsub("(" .. string.rep(".", 64) .. ")", "%1\n")
      assert.equals(id, assert(keyring.import(wrapped, priv)).active)
    end)

    it("moves the keys to a fresh process, where values decrypt", function()
      local value = assert(keyring.encrypt("travels", CONTEXT))
      local blob_path = tmp_file(assert(keyring.export(pub)))
      local priv_path = tmp_file(priv)
      local out = run_fresh([[
        local keyring = require "kong.keyring"
        local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
        assert(keyring.init())
        assert(keyring.init_worker())
        local ring = assert(keyring.import(read("]] .. blob_path .. [["), read("]] .. priv_path .. [[")))
        io.write(ring.active, "\n", keyring.active_id(), "\n")
        io.write(assert(keyring.decrypt("]] .. value .. [[", "]] .. CONTEXT .. [[")), "\n")
      ]])
      assert.equals(id .. "\n" .. id .. "\ntravels\n", out)
    end)

    it("imports a Kong Enterprise v1 blob built with openssl (PKCS#1 v1.5, GCM keystream, '\\/')", function()
      local one_time, nonce = rand.bytes(32), rand.bytes(12)
      local inner = '{"keys":{"EEimp001":"' .. FF_KEY_B64:gsub("/", "\\/") .. '"},"active":"EEimp001"}'
      local d = cipher.new("aes-256-ctr"):encrypt(one_time, nonce .. "\0\0\0\2"):final(inner)
      local envelope = cjson.encode({
        k = b64enc(rsa_encrypt(pub, one_time, false)),
        n = b64enc(nonce),
        d = b64enc(d),
      })
      local ring = assert(keyring.import(b64enc(envelope), priv))
      assert.same({ ids = { "EEimp001" }, active = "EEimp001" }, ring)
      assert.equals("EEimp001", keyring.active_id())
      assert.equals(kcv(string.rep("\255", 32)), keyring.check_value("EEimp001"))
    end)

    it("imports all or nothing: a conflicting id adds no key", function()
      local a = helpers.generate_key()
      local b = helpers.generate_key()
      local blob = assert(keyring.export(pub))
      assert(keyring.remove(a))
      assert(keyring.remove(b))
      local _, different = helpers.generate_key()
      assert(keyring.add(a, different))
      assert(keyring.activate(other))
      assert.same({ n = 3, nil, "key '" .. a .. "' already exists with different material", "conflict" },
                  pack(keyring.import(blob, priv)))
      assert.is_false(contains(keyring.keys().ids, b))
      assert.equals(other, keyring.active_id())
      assert(keyring.remove(a))
    end)

    it("answers nil, err for a private key that does not match", function()
      assert.same({ n = 3, nil, "RSA-OAEP unwrap failed (wrong private key?)", "invalid" },
                  pack(keyring.import(assert(keyring.export(pub)), priv2)))
    end)

    it("answers nil, err for a public key where a private key is needed", function()
      local res = pack(keyring.import(assert(keyring.export(pub)), pub))
      assert.same({ n = 3, nil, "expected an RSA private key, got a public key", "invalid" }, res)
      assert.truthy(res[2]:find("public key", 1, true))
    end)

    it("answers nil, err for a 1024-bit private key", function()
      assert.same({ n = 3, nil, "RSA key too small (1024 bits, at least 2048 required)", "invalid" },
                  pack(keyring.import(assert(keyring.export(pub)), priv1k)))
    end)

    it("answers nil, err for a blob that is not base64", function()
      assert.same({ n = 3, nil, "invalid export blob: not base64", "invalid" }, pack(keyring.import("not base64 !!", priv)))
    end)

    it("answers nil, err for the base64 of junk", function()
      assert.same({ n = 3, nil, "invalid export blob: not a keyring export", "invalid" },
                  pack(keyring.import(b64enc("hello world, not json"), priv)))
    end)

    it("answers nil, err for JSON without the envelope's fields", function()
      assert.same({ n = 3, nil, "invalid export blob: not a keyring export", "invalid" },
                  pack(keyring.import(b64enc('{"a":1}'), priv)))
    end)

    it("answers nil, err for an empty blob", function()
      assert.same({ n = 3, nil, "invalid export blob: not a keyring export", "invalid" }, pack(keyring.import("", priv)))
    end)

    it("answers nil, err for a truncated blob", function()
      local blob = assert(keyring.export(pub))
      local half = math.floor(#blob / 8) * 4
      assert.same({ n = 3, nil, "invalid export blob: not a keyring export", "invalid" },
                  pack(keyring.import(blob:sub(1, half), priv)))
    end)

    it("answers nil, err for a nonce that is not 12 bytes", function()
      local envelope = cjson.decode(b64dec(assert(keyring.export(pub))))
      envelope.n = b64enc("short")
      assert.same({ n = 3, nil, "invalid export blob: nonce must be 12 bytes", "invalid" },
                  pack(keyring.import(b64enc(cjson.encode(envelope)), priv)))
    end)

    it("answers nil, err for an unknown envelope version", function()
      local envelope = cjson.decode(b64dec(assert(keyring.export(pub))))
      envelope.v = 3
      assert.same({ n = 3, nil, "invalid export blob: unknown version 3", "invalid" },
                  pack(keyring.import(b64enc(cjson.encode(envelope)), priv)))
    end)

    it("answers nil, err for a v2 blob whose data was changed", function()
      local envelope = cjson.decode(b64dec(assert(keyring.export(pub))))
      local d = b64dec(envelope.d)
      envelope.d = b64enc(d:sub(1, 9) .. string.char((d:byte(10) + 1) % 256) .. d:sub(11))
      assert.same({ n = 3, nil, "authentication failed", "authentication" },
                  pack(keyring.import(b64enc(cjson.encode(envelope)), priv)))
    end)

    it("answers nil, err for a v2 blob stripped of its version (no downgrade to v1)", function()
      local envelope = cjson.decode(b64dec(assert(keyring.export(pub))))
      envelope.v = nil
      local before = #keyring.keys().ids
      local res = pack(keyring.import(b64enc(cjson.encode(envelope)), priv))
      -- PKCS#1 v1.5 unwrapping of an OAEP block fails in one of these ways
      -- (with implicit rejection it yields random bytes of a random length)
      assert.equals(3, res.n)
      assert.is_nil(res[1])
      assert.equals("invalid", res[3])
      assert.is_true(res[2] == "RSA PKCS#1 v1.5 unwrap failed (wrong private key?)"
                     or res[2] == "key must be 32 bytes"
                     or res[2] == "invalid export blob: contents do not decode (wrong private key?)",
                     res[2])
      assert.equals(before, #keyring.keys().ids)
    end)
  end)


  describe("recovery_row / recover", function()
    it("returns a $ker$2$ row and the 64-hex recovery key id", function()
      local row, recovery_key_id = assert(keyring.recovery_row(id, pub))
      assert.truthy(row:match("^%$ker%$2%$[A-Za-z0-9+/]+=*$"))
      assert.equals(256, #b64dec(row:sub(8)))
      assert.truthy(recovery_key_id:match("^" .. string.rep("[0-9a-f]", 64) .. "$"))
    end)

    it("returns public_key_id(public_pem) as the recovery key id", function()
      local _, recovery_key_id = assert(keyring.recovery_row(id, pub))
      assert.equals(keyring.public_key_id(pub), recovery_key_id)
    end)

    it("recovers the key under a new id with the same bytes", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 1, true }, pack(keyring.recover("RecNew01", row, priv)))
      assert.equals(keyring.check_value(id), keyring.check_value("RecNew01"))
      assert(keyring.remove("RecNew01"))
    end)

    it("answers true when the id already holds these bytes", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 1, true }, pack(keyring.recover(id, row, priv)))
    end)

    it("writes a $ker$1$ row in v1 mode that recover opens", function()
      assert(keyring.init({ write_format = "v1" }))
      local row = assert(keyring.recovery_row(id, pub))
      assert.equals("$ker$1$", row:sub(1, 7))
      assert(keyring.init({}))
      assert(keyring.recover("RecV1001", row, priv))
      assert.equals(keyring.check_value(id), keyring.check_value("RecV1001"))
      assert(keyring.remove("RecV1001"))
    end)

    it("recovers a $ker$1$ row made by openssl (Kong Enterprise, PKCS#1 v1.5)", function()
      local row = "$ker$1$" .. b64enc(rsa_encrypt(pub, TEST_KEY_RAW, false))
      assert(keyring.recover("RecEE001", row, priv))
      assert.equals(kcv(TEST_KEY_RAW), keyring.check_value("RecEE001"))
    end)

    it("recovers a $ker$2$ row made by openssl (RSA-OAEP-SHA256)", function()
      local row = "$ker$2$" .. b64enc(rsa_encrypt(pub, TEST_KEY_RAW, true))
      assert(keyring.recover("RecOaep1", row, priv))
      assert.equals(kcv(TEST_KEY_RAW), keyring.check_value("RecOaep1"))
    end)

    it("answers nil, err when recovery_row gets an unknown id", function()
      assert.same({ n = 3, nil, "key 'NoSuchId' not found", "not_found" }, pack(keyring.recovery_row("NoSuchId", pub)))
    end)

    it("answers nil, err when recovery_row gets a private key", function()
      assert.same({ n = 3, nil, "expected an RSA public key, got a private key", "invalid" },
                  pack(keyring.recovery_row(id, priv)))
    end)

    it("answers nil, err when recovery_row gets a 1024-bit key", function()
      assert.same({ n = 3, nil, "RSA key too small (1024 bits, at least 2048 required)", "invalid" },
                  pack(keyring.recovery_row(id, pub1k)))
    end)

    it("answers nil, err when recover gets a public key", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "expected an RSA private key, got a public key", "invalid" },
                  pack(keyring.recover("RecBad01", row, pub)))
    end)

    it("answers nil, err when recover gets a private key that does not match", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "RSA-OAEP unwrap failed (wrong private key?)", "invalid" },
                  pack(keyring.recover("RecBad02", row, priv2)))
    end)

    it("never opens a $ker$1$ row with a private key that does not match its check value (2000 tries)", function()
      -- $ker$1$ (PKCS#1 v1.5, implicit rejection) has no integrity of its own: a
      -- wrong private key yields random bytes, 32 of them about once in 270
      -- tries; the key's check value (keyring_meta.kcv) must refuse those
      -- (the outcome is fixed for one row and key: every try wraps afresh)
      local kcv = assert(keyring.check_value(id))
      local rows = {}
      assert(keyring.init({ write_format = "v1" }))
      for i = 1, 2000 do
        rows[i] = assert(keyring.recovery_row(id, pub))
      end
      assert(keyring.init({}))
      local opened = 0
      for i = 1, 2000 do
        local ok, err = keyring.recover("RecWrong" .. i, rows[i], priv2, kcv)
        assert.matches("wrong private key", err, 1, true)
        if ok then
          opened = opened + 1
          assert(keyring.remove("RecWrong" .. i))
        end
      end
      assert.equals(0, opened)
    end)

    it("answers nil, err when recover gets a 1024-bit private key", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "RSA key too small (1024 bits, at least 2048 required)", "invalid" },
                  pack(keyring.recover("RecBad03", row, priv1k)))
    end)

    it("answers nil, err for a row without a $ker$ prefix", function()
      assert.same({ n = 3, nil, "invalid recovery row: expected a $ker$2$ or $ker$1$ value", "invalid" },
                  pack(keyring.recover("RecBad04", "garbage", priv)))
    end)

    it("answers nil, err for bad base64 in a row", function()
      assert.same({ n = 3, nil, "invalid base64 in recovery row", "invalid" },
                  pack(keyring.recover("RecBad05", "$ker$2$!!!!", priv)))
    end)

    it("answers nil, err for a row cut short by 4 chars", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "RSA-OAEP unwrap failed (wrong private key?)", "invalid" },
                  pack(keyring.recover("RecBad06", row:sub(1, -5), priv)))
    end)

    it("answers nil, err for a row that wraps something other than 32 bytes", function()
      local row = "$ker$2$" .. b64enc(rsa_encrypt(pub, "only 16 bytes!!!", true))
      assert.same({ n = 3, nil, "key must be 32 bytes", "invalid" }, pack(keyring.recover("RecBad07", row, priv)))
    end)

    it("answers nil, err when recovering under an invalid id", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "invalid key id: '-' is not allowed", "invalid" }, pack(keyring.recover("a-b", row, priv)))
    end)

    it("answers nil, err when recovering under an id that holds other bytes", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "key '" .. other .. "' already exists with different material", "conflict" },
                  pack(keyring.recover(other, row, priv)))
    end)

    it("adds nothing when recover fails", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.is_nil(keyring.recover("RecBad08", row, priv2))
      assert.is_false(contains(keyring.keys().ids, "RecBad08"))
    end)
  end)


  describe("transport_key / receive", function()
    it("makes one RSA-2048 pair per process and gives its public half", function()
      local pem = assert(keyring.transport_key())
      assert.truthy(pem:find("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-\n"))
      assert.equals(pem, keyring.transport_key())
      local bits = sh("openssl pkey -pubin -in " .. tmp_file(pem) .. " -noout -text"):match("(%d+) bit")
      assert.equals("2048", bits)
    end)

    it("adds a key wrapped for the transport key, checked against its check value", function()
      local row = assert(keyring.recovery_row(id, assert(keyring.transport_key())))
      assert.same({ n = 1, true }, pack(keyring.receive("Recv0001", row, keyring.check_value(id))))
      assert.equals(keyring.check_value(id), keyring.check_value("Recv0001"))
      assert(keyring.remove("Recv0001"))
    end)

    it("opens a row openssl wrapped for it (RSA-OAEP-SHA256)", function()
      local row = "$ker$2$" .. b64enc(rsa_encrypt(assert(keyring.transport_key()), TEST_KEY_RAW, true))
      assert(keyring.receive("Recv0002", row))
      assert.equals(kcv(TEST_KEY_RAW), keyring.check_value("Recv0002"))
    end)

    it("answers nil, err for a row wrapped for another key, or a check value that does not match", function()
      local row = assert(keyring.recovery_row(id, pub))
      assert.same({ n = 3, nil, "RSA-OAEP unwrap failed (wrong private key?)", "invalid" },
                  pack(keyring.receive("Recv0003", row)))
      row = assert(keyring.recovery_row(id, assert(keyring.transport_key())))
      local nil1, err = keyring.receive("Recv0004", row, keyring.check_value(other))
      assert.is_nil(nil1)
      assert.truthy(err:find("check value", 1, true), err)
      assert.is_false(contains(keyring.keys().ids, "Recv0003"))
      assert.is_false(contains(keyring.keys().ids, "Recv0004"))
    end)

    it("raises when receive gets non-strings", function()
      assert.has_error(function() keyring.receive(1, "row") end, "bad 'id' argument: string expected, got number")
      assert.has_error(function() keyring.receive("Recv0005", nil) end, "bad 'row' argument: string expected, got nil")
      assert.has_error(function() keyring.receive("Recv0005", "row", 5) end,
                       "bad 'check_value' argument: string expected, got number")
    end)
  end)


  describe("public_key_id", function()
    it("returns the hex SHA-256 of the public key's DER (checked with the openssl CLI)", function()
      local der = sh("openssl pkey -pubin -in " .. tmp_file(pub) .. " -outform DER | sha256sum")
      assert.equals(der:match("^(%x+)"), keyring.public_key_id(pub))
    end)

    it("is the same for the PKCS#1, SPKI and base64 forms of one key", function()
      local pkcs1 = pkcs1_public(priv)
      assert.equals(keyring.public_key_id(pub), keyring.public_key_id(pkcs1))
      assert.equals(keyring.public_key_id(pub), keyring.public_key_id(b64enc(pub)))
    end)

    it("differs between two keys", function()
      assert.not_equals(keyring.public_key_id(pub), keyring.public_key_id(pub2))
    end)

    it("answers nil, err for a private key", function()
      assert.same({ n = 3, nil, "expected an RSA public key, got a private key", "invalid" }, pack(keyring.public_key_id(priv)))
    end)

    it("answers nil, err for a 1024-bit key", function()
      assert.same({ n = 3, nil, "RSA key too small (1024 bits, at least 2048 required)", "invalid" },
                  pack(keyring.public_key_id(pub1k)))
    end)

    it("answers nil, err for garbage", function()
      assert.same({ n = 3, nil, "not a PEM key or base64 of a PEM key", "invalid" }, pack(keyring.public_key_id("garbage")))
    end)
  end)
end)
