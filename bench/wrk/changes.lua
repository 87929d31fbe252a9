-- The change feed from the start: every store of the account.
wrk.method = "GET"
wrk.path = "/v1/changes?since=0"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SYNC_TOKEN")
