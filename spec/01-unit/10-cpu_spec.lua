local helpers = require "helpers"
local cpu = require "kong.keyring.cpu"


describe("kong.keyring.cpu", function()
  local path = assert(package.searchpath("kong.keyring.native", package.cpath))
  local dir = helpers.tmp .. "/cpu-spec"

  local function cpuinfo(flags)
    os.execute("mkdir -p " .. dir)
    local file = dir .. "/cpuinfo"
    helpers.write_file(file, "processor\t: 0\nvendor_id\t: Test\nflags\t\t: " .. flags
                             .. "\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    return file
  end

  it("records what scripts/cargo-build.sh chose for this host", function()
    local ok, chosen = helpers.run("scripts/cargo-build.sh --features")
    assert(ok, chosen)
    local listed = {}
    for name in cpu.required(path):gmatch("%S+") do
      listed[#listed + 1] = name
    end
    local expected = {}
    for name in chosen:gmatch("%S+") do
      expected[#expected + 1] = name
    end
    assert.same(expected, listed)
  end)

  it("accepts the library on this machine", function()
    assert.is_true(cpu.check(path))
  end)

  it("names every required feature a CPU lacks", function()
    assert.same({ "avx2" }, cpu.missing("aes pclmulqdq avx2", { aes = true, pclmulqdq = true, sse2 = true }))
    assert.same({}, cpu.missing("", {}))
    assert.same({ "aes", "avx2" }, cpu.missing("aes avx2", {}))
  end)

  it("reads the first processor's flags", function()
    assert.same({ fpu = true, aes = true, avx2 = true }, cpu.flags(cpuinfo("fpu aes avx2")))
    assert.is_nil(cpu.flags(dir .. "/no-such-file"))
  end)

  it("refuses the library on a CPU without what it was built for, and says how to fix it", function()
    local required = cpu.required(path)
    local ok, err = cpu.check(path, cpuinfo("fpu sse sse2"))
    assert.equals(required == "", ok == true)
    for name in required:gmatch("%S+") do
      assert.matches(name, err, 1, true)
    end
    if err then
      assert.matches("KONG_KEYRING_PORTABLE=1", err, 1, true)
    end
  end)

  it("accepts it where /proc/cpuinfo cannot be read", function()
    assert.is_true(cpu.check(path, dir .. "/no-such-file"))
  end)
end)
