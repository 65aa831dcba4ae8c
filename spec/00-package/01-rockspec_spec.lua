local helpers = require "helpers"


describe("kong-keyring rockspec", function()
  local tree = helpers.tmp .. "/rocktree"

  lazy_setup(function()
    os.execute("rm -rf " .. tree)
    local rockspec = assert(io.popen("ls " .. helpers.root .. "/kong-keyring-*.rockspec")):read("*l")
    local ok, out = helpers.run("cd " .. helpers.root .. " && luarocks --lua-version=5.1 make --deps-mode=none --tree="
                                .. tree .. " " .. rockspec)
    assert(ok, out)
  end)

  it("installs a tree from which luajit can require kong.keyring", function()
    -- only the installed tree on the paths: nothing from the work tree leaks in
    local script = [[
      local k = require "kong.keyring"
      assert(k.init())
      assert(k.init_worker())
      local id = assert(k.generate())
      assert(k.activate(id))
      local v = assert(k.encrypt("from the rock", "ctx"))
      io.write(package.searchpath("kong.keyring.native", package.cpath), "\n")
      io.write(v:sub(1, 7), " ", k.decrypt(v, "ctx"), "\n")
    ]]
    local cmd = "cd / && LUA_PATH=" .. helpers.shell_quote(tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua;;")
                .. " LUA_CPATH=" .. helpers.shell_quote(tree .. "/lib/lua/5.1/?.so;;")
                .. " luajit -e " .. helpers.shell_quote(script)
    local ok, out = helpers.run(cmd)
    assert.is_true(ok, out)
    assert.equals(tree .. "/lib/lua/5.1/kong/keyring/native.so\n$ke$2$- from the rock\n", out)
  end)

  it("installs every Lua module of the work tree, the Kong plugin's too", function()
    local ok, files = helpers.run("cd " .. helpers.root .. "/lua && find . -name '*.lua' | sort")
    assert(ok, files)
    local count = 0
    local tree_path = tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua"
    for file in files:gmatch("%./([^\n]+)") do
      local module = file:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      local installed = package.searchpath(module, tree_path)
      assert(installed, module .. " is not installed")
      assert.equals(helpers.read_file(helpers.root .. "/lua/" .. file), helpers.read_file(installed), module)
      count = count + 1
    end
    assert.truthy(count >= 14)
  end)
end)
