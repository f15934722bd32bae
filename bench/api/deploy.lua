-- POST /api/v1/deployments: a new deployment with a name of its own (thread id and counter),
-- run by the server's runner with the simulated driver.
local token = os.getenv("TOKEN")
local counter = 0
-- thread_id is a global each thread's state receives from setup (a local here would shadow it:
-- every thread would then make the same names, and half the creations would be 409s).
thread_id = 0
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"b-%d-%d","deployment_type":"lxc","framework":"static",' ..
    '"github_url":"https://github.com/acme/site","resources":{"cores":1,"memory":256,"disk":5}}',
    thread_id, counter)
  return wrk.format("POST", "/api/v1/deployments", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end
