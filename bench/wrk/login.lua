-- Sign in with the right password: the cost is PBKDF2 (PBKDF2_ITERATIONS).
wrk.method = "POST"
wrk.path = "/v1/sessions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"id":"%s","password":"%s"}', os.getenv("SYNC_ID"), os.getenv("SYNC_PASSWORD"))
