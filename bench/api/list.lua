-- GET /api/v1/projects: random pages of 20, sorted by name, sometimes with a search.
local token = os.getenv("TOKEN")
local pages = tonumber(os.getenv("PAGES") or "50")

request = function()
  local page = math.random(pages)
  local path = "/api/v1/projects?per_page=20&sort=name&page=" .. page
  if math.random(4) == 1 then
    path = path .. "&search=bench-01"
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end
