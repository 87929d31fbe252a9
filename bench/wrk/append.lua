-- Appends a 1 KiB entry to the log of one store per connection (run with
-- as many threads as connections): POST /v1/stores/<prefix><id>/log.
local token = os.getenv("SYNC_TOKEN")
local prefix = os.getenv("SYNC_PREFIX")
local payload = string.rep("e", 1024)
local created = 0

function setup(thread)
   created = created + 1
   thread:set("id", created)
end

function request()
   local headers = { ["Authorization"] = "Bearer " .. token }
   return wrk.format("POST", "/v1/stores/" .. prefix .. id .. "/log", headers, payload)
end
