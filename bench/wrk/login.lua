-- Sign in with the right password: the cost is PBKDF2 (PBKDF2_ITERATIONS).
-- Each connection (run with as many threads as connections) signs in to
-- accounts of its own, SYNC_ID-<connection>-1 … -SYNC_ACCOUNTS in turn,
-- from an address of its own (X-Forwarded-For: the bench's server trusts
-- loopback as a proxy), so the figure is PBKDF2 and not the shares and
-- limits per account and per address (4 and 12 hashing places, 60
-- sign-ins an hour).
local created = 0

function setup(thread)
   created = created + 1
   thread:set("id", created)
end

function init(args)
   accounts = tonumber(os.getenv("SYNC_ACCOUNTS")) or 1
   turn = 0
end

function request()
   turn = turn % accounts + 1
   local body = string.format('{"id":"%s-%d-%d","password":"%s"}', os.getenv("SYNC_ID"), id, turn,
      os.getenv("SYNC_PASSWORD"))
   local from = string.format("10.1.%d.%d", math.floor(id / 200), id % 200 + 1)
   return wrk.format("POST", "/v1/sessions", { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = from },
      body)
end
