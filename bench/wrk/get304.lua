-- Conditional GET of a 1 KiB store with its current ETag: 304 Not Modified.
wrk.method = "GET"
wrk.path = "/v1/stores/" .. os.getenv("SYNC_KEY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SYNC_TOKEN")
wrk.headers["If-None-Match"] = os.getenv("SYNC_ETAG")
