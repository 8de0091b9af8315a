-- wrk: closed-loop maximum throughput of POST /v1/decisions over the benchmark's bodies
-- (one JSON body per line in $WRK_BODIES; decisions only, no feedback).
local bodies = {}
local i = 0

function init(args)
  for line in io.lines(os.getenv("WRK_BODIES")) do
    bodies[#bodies + 1] = line
  end
  i = math.random(#bodies)
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/decisions", { ["Content-Type"] = "application/json" }, bodies[i])
end
