-- Sign in with the right password: the cost is PBKDF2 (PBKDF2_ITERATIONS).
-- Each connection (run with as many threads as connections) signs in to
-- its own account, SYNC_ID-1, SYNC_ID-2 …, so the figure is PBKDF2 and not
-- the per-account shares and limits (4 hashing places, 60 sign-ins an hour).
local created = 0

function setup(thread)
   created = created + 1
   thread:set("id", created)
end

function request()
   local body = string.format('{"id":"%s-%d","password":"%s"}', os.getenv("SYNC_ID"), id, os.getenv("SYNC_PASSWORD"))
   return wrk.format("POST", "/v1/sessions", { ["Content-Type"] = "application/json" }, body)
end
