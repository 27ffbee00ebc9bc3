-- wrk script: sends the pre-signed deliveries of $DELIVERIES (gen_deliveries.py) in order,
-- cycling when they run out. wrk cannot compute HMAC-SHA256, hence the file.
local requests = {}
local n = 0

function init(args)
  local path = os.getenv("DELIVERIES")
  for line in io.lines(path) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    requests[n] = wrk.format("POST", "/webhook", {
      ["Content-Type"] = "application/json",
      ["webhook-id"] = id,
      ["webhook-timestamp"] = ts,
      ["webhook-signature"] = sig,
    }, body)
  end
end

local i = 0
function request()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end
