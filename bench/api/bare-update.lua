-- PUT /bare/items/{id} on bare-server: the body update.lua sends Atelier (a random project among
-- those in ids.txt, a new build command), answered by one INSERT.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local counter = 0

request = function()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  local name = "bench-" .. id
  local body = '{"name":"' .. name .. '","repo":"https://example.com/r.git","build_command":"make ' .. counter .. '"}'
  return wrk.format("PUT", "/bare/items/" .. id, { ["Content-Type"] = "application/json" }, body)
end
