-- Reads 100 entries of 500 bytes after a cursor: GET /v1/stores/<key>/log?after=0.
local token = os.getenv("SYNC_TOKEN")
local key = os.getenv("SYNC_LOG_KEY")

function request()
   return wrk.format("GET", "/v1/stores/" .. key .. "/log?after=0", { ["Authorization"] = "Bearer " .. token })
end
