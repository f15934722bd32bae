-- POST /api/v1/projects/{id}/build: a build of a random project among those in ids.txt (the
-- server runs them with the simulated driver, at its configured concurrency).
local ids = {}
local token = os.getenv("TOKEN")
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end

request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/api/v1/projects/" .. id .. "/build", {
    ["Authorization"] = "Bearer " .. token,
  })
end
