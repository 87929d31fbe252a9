-- Each connection (run with as many threads as connections) writes its own
-- store: the first request creates it (If-None-Match: *), every later one
-- sends If-Match with the ETag of the previous answer, so every write
-- succeeds. A 412 carries the current ETag too; 412s are counted.
local token = os.getenv("SYNC_TOKEN")
local prefix = os.getenv("SYNC_PREFIX")
local payload = string.rep("x", 1024)
local created = 0
local threads = {}

function setup(thread)
   created = created + 1
   thread:set("id", created)
   table.insert(threads, thread)
end

conflicts = 0
local etag = nil

function request()
   local headers = { ["Authorization"] = "Bearer " .. token }
   if etag then
      headers["If-Match"] = etag
   else
      headers["If-None-Match"] = "*"
   end
   return wrk.format("PUT", "/v1/stores/" .. prefix .. id, headers, payload)
end

function response(status, headers, body)
   if status == 412 then
      conflicts = conflicts + 1
   end
   etag = headers["ETag"] or etag
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("conflicts")
   end
   io.write(string.format("conflicts %d\n", total))
end
