-- PUT /api/v1/projects/{id}: a random project among those listed in ids.txt gets a new build
-- command (no rename, no If-Match: the server decides again on conflicts).
local ids = {}
local token = os.getenv("TOKEN")
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
local counter = 0

request = function()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  local name = "bench-" .. id
  local body = '{"name":"' .. name .. '","repo":"https://example.com/r.git","build_command":"make ' .. counter .. '"}'
  return wrk.format("PUT", "/api/v1/projects/" .. id, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end
