-- GET on bare-server's list routes (LIST_PATH: /bare/projects or /bare/projects-as-atelier): the
-- pages list.lua asks Atelier for (random pages of 20, by name, one in four with a search).
local pages = tonumber(os.getenv("PAGES") or "50")
local list_path = os.getenv("LIST_PATH") or "/bare/projects"

request = function()
  local page = math.random(pages)
  local path = list_path .. "?page=" .. page
  if math.random(4) == 1 then
    path = path .. "&search=bench-01"
  end
  return wrk.format("GET", path)
end
