-- GET a 1 KiB store with bearer authentication.
wrk.method = "GET"
wrk.path = "/v1/stores/" .. os.getenv("SYNC_KEY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SYNC_TOKEN")
