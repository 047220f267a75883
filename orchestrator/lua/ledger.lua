-- chordflow run ledger: every state transition of a run, atomically.
--
-- KEYS (orchestrator/keys.py RunKeys.ordered()):
--   1 meta  2 nodes  3 state  4 pending  5 bad  6 results  7 attempts  8 times
--   9 hosts  10 errors  11 progress  12 leases  13 attempt_log  14 templates  15 task_ids
--   16 lost  17 waiting  18 events (stream)  19 chunks  20 chunk_io  21 maps  22 map_ready  23 map_inflight
--   24 active runs (global set)  25 due (global zset)  26 notify (global zset: the outbox of run-end notifications)
--   27 metrics (global hash: counters, orchestrator/metrics.py)  28 settled (global stream: for slow-task alerts)
--   The global keys are never expired here; N_RUN_KEYS are the run's own.
-- ARGV[1] = operation, ARGV[2] = run_id, then per operation (see the dispatcher at the end).
--
-- Settling a node (succeeded/failed/...) is write-once: a second settle of a
-- terminal node changes nothing, so a redelivered task never releases its
-- children twice. Releasing a child decrements its counter of unsettled
-- parents; at zero the child is dispatched (LPUSH of a Celery message built
-- from the per-task template), marked upstream_failed, or cancelled.
--
-- Map nodes (C6): a map node M runs its task once per chunk of what its `over` parent returned. A chunk
-- is addressed as "M[i]" wherever a node name goes (messages, leases, attempts, the due index), so
-- begin/succeed/fail/defer/lost/reap treat it like a node; its state lives in `chunks`, its input and
-- result in `chunk_io`, and settling it never releases children: when the last chunk settles, M
-- itself settles (write-once, like any node) and releases its children (the reduce) exactly once.
-- At most max_in_flight chunks of M are queued/running/retrying; each settle dispatches the next
-- (a cursor over the chunks, plus `map_ready` for chunks ready out of order: map after map, retries).
--
-- Time is Redis TIME, never a host's clock: retries and re-checks wait in the
-- global `due` zset (score = due epoch ms) until a worker's scheduler wakes
-- them (op `wake`); work that is given back (reaped, retried when due) goes to
-- the *front* of its queue (RPUSH: kombu consumes with BRPOP).

local K_META, K_NODES, K_STATE, K_PENDING, K_BAD, K_RESULTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_ATTEMPTS, K_TIMES, K_HOSTS, K_ERRORS, K_PROGRESS = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local K_LEASES, K_LOG, K_TEMPLATES, K_TASK_IDS = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local K_LOST, K_WAITING, K_EVENTS = KEYS[16], KEYS[17], KEYS[18]
local K_CHUNKS, K_CHUNK_IO, K_MAPS, K_MAP_READY, K_MAP_INFLIGHT = KEYS[19], KEYS[20], KEYS[21], KEYS[22], KEYS[23]
local K_ACTIVE, K_DUE, K_NOTIFY = KEYS[24], KEYS[25], KEYS[26]
local K_METRICS, K_SETTLED = KEYS[27], KEYS[28]
local NOTIFY_CHANNEL = 'chordflow:notify-wake'  -- keys.NOTIFY_CHANNEL
local N_RUN_KEYS = 23
local EVENTS_MAXLEN = 10000  -- keys.EVENTS_MAXLEN
local LOST_SCAN = 1000  -- longest queue op_reap searches for a message it may have lost
local WAKE_CHANNEL = 'chordflow:wake'  -- keys.WAKE_CHANNEL (a channel, not a key; checked by tests/unit/test_structure.py)
local OP, RUN_ID = ARGV[1], ARGV[2]

local TERMINAL = {succeeded = true, cached = true, failed = true, upstream_failed = true, cancelled = true}
local RETRYABLE = {failed = true, upstream_failed = true, cancelled = true}
local READY_DIGITS = '%010d'  -- keys.MAP_READY_DIGITS
local SETTLED_MAXLEN = 10000  -- keys.SETTLED_MAXLEN
local ALERT_MEMBER = 'alert:'  -- keys.ALERT_MEMBER
-- metrics.DURATION_BUCKETS_S (upper bounds of the task duration histogram; checked by tests/unit/test_metrics.py)
local BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

local clock = redis.call('TIME')
local NOW_S = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local NOW_MS = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- "M[12]" -> "M", 12 (a chunk of map node M); nil for a plain node
local function chunk_of(node)
  local m, i = string.match(node, '^(.+)%[(%d+)%]$')
  if m then return m, tonumber(i) end
  return nil, nil
end

local function chunk_name(m, i) return m .. '[' .. i .. ']' end
local function ready_member(m, i) return m .. '|' .. string.format(READY_DIGITS, i) end
local function mget(m, f) return tonumber(redis.call('HGET', K_MAPS, m .. ':' .. f) or '0') end
local function mincr(m, f, by) return redis.call('HINCRBY', K_MAPS, m .. ':' .. f, by) end

local function map_counts(m)
  local f = redis.call('HMGET', K_MAPS, m .. ':total', m .. ':n_succeeded', m .. ':n_cached', m .. ':n_failed',
    m .. ':n_upstream_failed', m .. ':n_cancelled', m .. ':n_queued', m .. ':n_running', m .. ':n_retrying',
    m .. ':items', m .. ':allowed')
  local n = {}
  for i = 1, #f do n[i] = tonumber(f[i] or '0') end
  -- own: failures of this map's task (a chunk upstream_failed because a map before it was allowed to fail
  -- that element is not one: the element does not exist for this map)
  return {total = n[1], ok = n[2] + n[3], bad = n[4] + n[5] + n[6], own = n[4] + n[6], queued = n[7] + n[9],
          running = n[8], inflight = n[7] + n[8] + n[9], items = n[10], allowed = n[11]}
end

-- one event per chunk transition: the map's counts, not the chunk (a 100,000-chunk map is one bar)
local function map_event(m)
  local c = map_counts(m)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'kind', 'map', 'node', m, 'total', c.total,
    'succeeded', c.ok, 'failed', c.bad, 'running', c.running, 'queued', c.queued, 'items', c.items, 'at', NOW_S)
end

-- the state of a node or a chunk (a chunk not yet dispatched is pending if its map has that many)
local function state_of(node)
  local m, i = chunk_of(node)
  if not m then return redis.call('HGET', K_STATE, node) end
  local st = redis.call('HGET', K_CHUNKS, node)
  if st then return st end
  if redis.call('HEXISTS', K_MAPS, m .. ':total') == 1 and i < mget(m, 'total') then return 'pending' end
  return false
end

-- every state change is announced on the run's event stream in the same atomic step (push, not poll)
local function set_state(node, st)
  local m = chunk_of(node)
  if m then
    local old = redis.call('HGET', K_CHUNKS, node) or 'pending'
    redis.call('HSET', K_CHUNKS, node, st)
    if old ~= st then
      mincr(m, 'n_' .. old, -1)
      mincr(m, 'n_' .. st, 1)
    end
    return  -- announced once per settled chunk (finish_chunk), with the map's counts: not 3 events per chunk
  end
  redis.call('HSET', K_STATE, node, st)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'kind', 'task', 'node', node, 'state', st, 'at', NOW_S)
end

local function run_event(st)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'kind', 'run', 'state', st, 'at', NOW_S)
end

local SPECS = {}
local spec  -- defined below

-- metrics (orchestrator/metrics.py): O(1) counters in one global hash, kept as things happen, so a scrape
-- reads a fixed number of keys whatever the history. The duration is Redis time since the attempt began.
-- Every metrics write is a pcall: a script is not rolled back on error, and a counter that cannot be
-- written (a field of another type, a damaged key) must never leave a transition half done.
local function metric(field, by) redis.pcall('HINCRBY', K_METRICS, field, by or 1) end

local function observe(node, outcome)
  local task = spec(node).task
  local started
  if string.sub(node, -1) == ']' then started = redis.call('HGET', K_CHUNK_IO, node .. ':t:attempt_started')
  else started = redis.call('HGET', K_TIMES, node .. ':attempt_started') end
  local d = 0
  if started then d = math.max(0, tonumber(NOW_S) - tonumber(started)) end
  local b = #BUCKETS
  for j = 1, #BUCKETS do
    if d <= BUCKETS[j] then b = j - 1 break end
  end
  metric('d|' .. task .. '|' .. outcome .. '|' .. b)
  metric('du|' .. task .. '|' .. outcome, math.floor(d * 1000000 + 0.5))  -- microseconds: HINCRBY is cheaper
  return task, d
end

-- an alert condition the checker (orchestrator/alerts.py) has switched on until an epoch ms
local function alerting(what)
  local v = redis.pcall('HGET', K_METRICS, what)
  return type(v) == 'string' and (tonumber(v) or 0) > NOW_MS
end

spec = function(node)  -- a chunk's record is its map node's
  local s = SPECS[node]
  if s == nil then
    local m = chunk_of(node)
    if m then s = spec(m) else s = cjson.decode(redis.call('HGET', K_NODES, node)) end
    SPECS[node] = s
  end
  return s
end

local function result_of(node)
  if chunk_of(node) then return redis.call('HGET', K_CHUNK_IO, node .. ':out') end
  return redis.call('HGET', K_RESULTS, node)
end

-- a chunk's times, host and attempt count live in chunk_io ("M[i]:t:queued", "M[i]:host", "M[i]:attempts"):
-- the run's per-node hashes (what a status reads whole) stay small however wide its maps are
local function stamp(node, what)
  if chunk_of(node) then redis.call('HSET', K_CHUNK_IO, node .. ':t:' .. what, NOW_S)
  else redis.call('HSET', K_TIMES, node .. ':' .. what, NOW_S) end
end

local function attempts_at(node)
  if chunk_of(node) then return K_CHUNK_IO, node .. ':attempts' end
  return K_ATTEMPTS, node
end

local CHUNK_FIELDS = {':t:queued', ':t:started', ':t:attempt_started', ':t:finished', ':host', ':attempts'}
local function forget_chunk(c, with_io)  -- everything recorded about a chunk's attempts (and its input/result)
  for _, k in ipairs({K_ERRORS, K_LOST, K_PROGRESS, K_LEASES, K_TASK_IDS}) do redis.call('HDEL', k, c) end
  local fields = {}
  for _, f in ipairs(CHUNK_FIELDS) do fields[#fields + 1] = c .. f end
  if with_io then
    fields[#fields + 1] = c .. ':in'
    fields[#fields + 1] = c .. ':out'
    redis.call('HDEL', K_CHUNKS, c)
  end
  redis.call('HDEL', K_CHUNK_IO, unpack(fields))
end

local finish_chunk, refill, open_map  -- defined below (they and finish/propagate call each other)

local function finalize_run()
  local function count(f) return tonumber(redis.call('HGET', K_META, f) or '0') end
  local st = 'succeeded'
  if redis.call('HGET', K_META, 'cancel_requested') == '1' then
    st = 'cancelled'
  elseif count('n_failed') + count('n_upstream_failed') + count('n_cancelled') > 0 then
    st = 'failed'
  end
  redis.call('HSET', K_META, 'state', st, 'finished_at', NOW_S)
  run_event(st)
  metric('run|' .. (redis.call('HGET', K_META, 'pipeline') or '') .. '|' .. st)
  if st == 'failed' and alerting('failed_on') then
    redis.pcall('ZADD', K_NOTIFY, NOW_MS, ALERT_MEMBER .. 'run_failed:' .. RUN_ID)
    metric('alert|run_failed')
    redis.pcall('PUBLISH', NOTIFY_CHANNEL, RUN_ID)
  end
  if redis.call('HEXISTS', K_META, 'notify') == 1 then
    -- the outbox: whoever is (or is not) still watching, a worker delivers it (at least once)
    redis.call('ZADD', K_NOTIFY, NOW_MS, RUN_ID)
    redis.call('PUBLISH', NOTIFY_CHANNEL, RUN_ID)
  end
  local ttl = tonumber(redis.call('HGET', K_META, 'ttl_s') or '604800')
  for i = 1, N_RUN_KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('SREM', K_ACTIVE, RUN_ID)
end

-- mark a node terminal and count it; finalizes the run when it was the last one
local function finish(node, state)
  if chunk_of(node) then return finish_chunk(node, state) end
  set_state(node, state)
  redis.call('HSET', K_TIMES, node .. ':finished', NOW_S)
  redis.call('HDEL', K_LEASES, node)
  redis.call('ZREM', K_WAITING, node)
  redis.call('HINCRBY', K_META, 'n_' .. state, 1)
  if redis.call('HINCRBY', K_META, 'remaining', -1) == 0 then finalize_run() end
end

-- publish the node's Celery message; `front` puts it at the head of the queue (given-back work)
-- the Celery message of `node` with task id `tid` (the same bytes every time: a dispatch can be found again)
local function message_of(node, tid)
  local s = spec(node)
  local tmpl = redis.call('HGET', K_TEMPLATES, s.task)
  local body = '[["' .. RUN_ID .. '","' .. node .. '"],{},{"callbacks":null,"errbacks":null,"chain":'
    .. (s.chain or 'null') .. ',"chord":null}]'
  -- one pass over the template; a table replacement inserts values literally (no % escapes)
  return (string.gsub(tmpl, '@@(%u+)@@', {BODY = cjson.encode(body), ID = tid, NODE = node, RUN = RUN_ID}))
end

local function dispatch(node, front)
  local s = spec(node)
  local n = redis.call('HINCRBY', K_META, 'dispatched', 1)
  local tid = RUN_ID .. '.' .. node .. '.' .. n
  redis.call(front and 'RPUSH' or 'LPUSH', s.q, message_of(node, tid))
  redis.call('HSET', K_TASK_IDS, node, tid)  -- the message now in flight for it (see op_reap)
  if chunk_of(node) then redis.call('SADD', K_MAP_INFLIGHT, node) end
  set_state(node, 'queued')
  stamp(node, 'queued')
  redis.call('ZADD', K_WAITING, NOW_MS, node)
end

-- decrement the children's counters; returns the children that became ready
local function release(node, ok, ready)
  local s = spec(node)
  for _, c in ipairs(s.down) do
    if not ok then redis.call('HINCRBY', K_BAD, c, 1) end
    if redis.call('HINCRBY', K_PENDING, c, -1) == 0 then ready[#ready + 1] = c end
  end
  return ready
end

-- a node whose parents are done starts: a map node opens (its chunks start), any other is dispatched
local function start(node)
  if spec(node).map then open_map(node) else dispatch(node) end
end

-- the Celery task id the predecessor's chain publishes the next hop under (op_succeed returns it): readable
-- like a ledger dispatch's, "<run_id>.<node>.<n>" from the same counter
local CHAIN_TID = nil

-- settle `node` as ok/not ok and walk the consequences down the graph
local function propagate(node, ok)
  if chunk_of(node) then return end  -- a chunk's consequences are settled by finish_chunk
  local stack = release(node, ok, {})
  local cancelled = redis.call('HGET', K_META, 'cancel_requested') == '1'
  while #stack > 0 do
    local c = table.remove(stack)
    local cst = redis.call('HGET', K_STATE, c)
    if cst == 'running' and spec(c).map then
      refill(c)  -- a map after a map: opened with its source, complete once that one has ended too
    elseif not TERMINAL[cst] then
      local cs = spec(c)
      local bad = tonumber(redis.call('HGET', K_BAD, c) or '0')
      local outcome = nil
      if cancelled then
        outcome = 'cancelled'
      elseif bad > 0 and cs.rule ~= 'always' then
        outcome = 'upstream_failed'
      end
      if outcome then
        finish(c, outcome)
        release(c, false, stack)
      elseif cs.via == 'chain' then
        -- its predecessor's Celery chain publishes it when that task returns
        set_state(c, 'queued')
        redis.call('HDEL', K_TASK_IDS, c)  -- Celery publishes the chain's message: nothing to look for
        CHAIN_TID = RUN_ID .. '.' .. c .. '.' .. redis.call('HINCRBY', K_META, 'dispatched', 1)
        redis.call('HSET', K_TIMES, c .. ':queued', NOW_S)
        redis.call('ZADD', K_WAITING, NOW_MS, c)
      else
        start(c)
      end
    end
  end
end

-- the attempt log's "at" is Redis time: the worker sends the line without it
local function stamped(line)
  if string.sub(line, -1) == '}' then return string.sub(line, 1, -2) .. ',"at":' .. NOW_S .. '}' end
  return line
end

local function due_member(node) return RUN_ID .. '|' .. node end

-- schedule `node` to be woken in `wait_ms` (Redis time) and wake the schedulers
local function schedule(node, wait_ms)
  local at = NOW_MS + math.max(0, math.floor(wait_ms))
  redis.call('ZADD', K_DUE, at, due_member(node))
  redis.call('PUBLISH', WAKE_CHANNEL, at)
end

local function mark_running_run()
  if redis.call('HGET', K_META, 'state') == 'pending' then
    redis.call('HSET', K_META, 'state', 'running', 'started_at', NOW_S)
    run_event('running')
  end
end

-- ---- map nodes -------------------------------------------------------------------------------

-- the next chunk of `m` to dispatch: one ready out of order first, else the cursor's next pending one
local function next_ready(m, total)
  while true do
    local r = redis.call('ZRANGEBYLEX', K_MAP_READY, '[' .. m .. '|', '[' .. m .. '|~', 'LIMIT', 0, 1)
    if #r == 0 then break end
    redis.call('ZREM', K_MAP_READY, r[1])
    local c = chunk_name(m, tonumber(string.sub(r[1], #m + 2)))
    if state_of(c) == 'pending' then return c end
  end
  local nxt = mget(m, 'next')
  local found = nil
  while nxt < total and not found do
    local c = chunk_name(m, nxt)
    nxt = nxt + 1
    if not redis.call('HGET', K_CHUNKS, c) then found = c end
  end
  redis.call('HSET', K_MAPS, m .. ':next', nxt)
  return found
end

-- dispatch chunks of `m` while it has room in flight; settle `m` once nothing more can happen
refill = function(m)
  if redis.call('HGET', K_STATE, m) ~= 'running' then return end
  local s = spec(m)
  local c = map_counts(m)
  local parents_done = tonumber(redis.call('HGET', K_PENDING, m) or '0') <= 0
  local upstream_bad = tonumber(redis.call('HGET', K_BAD, m) or '0') > 0
  local cancelled = redis.call('HGET', K_META, 'cancel_requested') == '1'
  -- fail fast: past allow_failed no new chunk starts (those in flight finish; retry runs the rest)
  if not (c.own > c.allowed or upstream_bad or cancelled) then
    while c.inflight < s.map.max_in_flight do
      local chunk = next_ready(m, c.total)
      if not chunk then break end
      dispatch(chunk)
      c.inflight = c.inflight + 1
    end
  end
  if c.inflight > 0 then return end
  local outcome = nil
  if cancelled then outcome = 'cancelled'
  elseif upstream_bad and parents_done then outcome = 'upstream_failed'
  elseif c.own > c.allowed then outcome = 'failed'
  elseif c.ok + c.bad == c.total and parents_done then outcome = 'succeeded'
  end
  if not outcome then return end
  redis.call('HSET', K_RESULTS, m, cjson.encode({map = m, chunks = c.total, succeeded = c.ok, failed = c.bad}))
  if outcome == 'failed' then
    redis.call('HSET', K_ERRORS, m, cjson.encode({type = 'MapFailed', reason = 'chunks_failed',
      message = c.own .. ' of ' .. c.total .. ' chunks failed (allow_failed: ' .. c.allowed .. ')'}))
  end
  finish(m, outcome)
  propagate(m, outcome == 'succeeded')
end

-- a settled chunk: count it, release chunk i of the maps that follow this one, refill the map
finish_chunk = function(node, state)
  local m, i = chunk_of(node)
  set_state(node, state)
  stamp(node, 'finished')
  redis.call('HDEL', K_LEASES, node)
  redis.call('HDEL', K_TASK_IDS, node)
  redis.call('HDEL', K_PROGRESS, node)
  redis.call('ZREM', K_WAITING, node)
  redis.call('SREM', K_MAP_INFLIGHT, node)
  for _, follower in ipairs(spec(m).streams or {}) do
    local fc = chunk_name(follower, i)
    if state == 'succeeded' or state == 'cached' then
      redis.call('ZADD', K_MAP_READY, 0, ready_member(follower, i))
      refill(follower)
    elseif state_of(fc) == 'pending' then
      finish_chunk(fc, state == 'cancelled' and 'cancelled' or 'upstream_failed')
    end
  end
  refill(m)
  map_event(m)
end

-- forget a map's chunks (its source ran again and returned new elements)
local function clear_map(m)
  local total = tonumber(redis.call('HGET', K_MAPS, m .. ':total') or '-1')
  for i = 0, total - 1 do forget_chunk(chunk_name(m, i), true) end
  local fields = {}
  for _, f in ipairs({'total', 'width', 'next', 'allowed', 'items', 'n_pending', 'n_queued', 'n_running',
      'n_retrying', 'n_succeeded', 'n_cached', 'n_failed', 'n_upstream_failed', 'n_cancelled'}) do
    fields[#fields + 1] = m .. ':' .. f
  end
  redis.call('HDEL', K_MAPS, unpack(fields))
  redis.call('ZREMRANGEBYLEX', K_MAP_READY, '[' .. m .. '|', '[' .. m .. '|~')
  for _, follower in ipairs(spec(m).streams or {}) do clear_map(follower) end
end

-- ARGV[first..]: (map, n, batch_1..batch_n)...: the elements of maps over the node that just settled
local function set_items(first)
  local a = first
  while a <= #ARGV do
    local m, n = ARGV[a], tonumber(ARGV[a + 1])
    if redis.call('HEXISTS', K_MAPS, m .. ':total') == 1 then clear_map(m) end
    for start = 0, n - 1, 500 do
      local pairs_ = {}
      for i = start, math.min(n, start + 500) - 1 do
        pairs_[#pairs_ + 1] = chunk_name(m, i) .. ':in'
        pairs_[#pairs_ + 1] = ARGV[a + 2 + i]
      end
      redis.call('HSET', K_CHUNK_IO, unpack(pairs_))
    end
    redis.call('HSET', K_MAPS, m .. ':width', n)
    a = a + 2 + n
  end
end

-- a retried map: its chunks that did not succeed become pending again (kept results stay)
local function reopen(m)
  local s = spec(m)
  local prefix = m .. '['
  local all = redis.call('HGETALL', K_CHUNKS)
  for j = 1, #all, 2 do
    local c, st = all[j], all[j + 1]
    if RETRYABLE[st] and string.sub(c, 1, #prefix) == prefix and chunk_of(c) == m then
      local _, i = chunk_of(c)
      local src = s.map.stream and state_of(chunk_name(s.map.over, i))
      -- map after map: a chunk whose source chunk stays failed (allowed there, not retried) stays as it is
      if not (s.map.stream and TERMINAL[src] and src ~= 'succeeded' and src ~= 'cached') then
        redis.call('HSET', K_CHUNKS, c, 'pending')
        mincr(m, 'n_' .. st, -1)
        mincr(m, 'n_pending', 1)
        forget_chunk(c, false)
        if not s.map.stream or src == 'succeeded' or src == 'cached' then
          redis.call('ZADD', K_MAP_READY, 0, ready_member(m, i))
        end
      end
    end
  end
end

-- the parents of map node `m` are done (or, map after map, its source map opened): its chunks start
open_map = function(m)
  local s = spec(m)
  if redis.call('HGET', K_STATE, m) == 'running' then return end
  local total
  if s.map.stream then
    total = mget(s.map.over, 'total')
  else
    total = tonumber(redis.call('HGET', K_MAPS, m .. ':width'))
  end
  set_state(m, 'running')
  redis.call('HSET', K_TIMES, m .. ':started', NOW_S, m .. ':attempt_started', NOW_S)
  mark_running_run()
  if total == nil then  -- its source's result was never split into chunks (cannot happen through a worker)
    redis.call('HSET', K_ERRORS, m, cjson.encode({type = 'MapError', reason = 'no_elements',
      message = 'no elements were recorded for this map from ' .. s.map.over}))
    finish(m, 'failed')
    propagate(m, false)
    return
  end
  if redis.call('HEXISTS', K_MAPS, m .. ':total') == 1 then
    reopen(m)
  else
    local allowed = s.map.allow_failed or 0
    if allowed < 1 and allowed > 0 then allowed = math.floor(allowed * total) end
    redis.call('HSET', K_MAPS, m .. ':total', total, m .. ':n_pending', total, m .. ':allowed', math.floor(allowed),
      m .. ':next', s.map.stream and total or 0)
  end
  for _, follower in ipairs(s.streams or {}) do open_map(follower) end
  map_event(m)
  refill(m)
end

-- items(map, n, batch...): the elements of maps over a node settled `cached` at submit (before op cached)
local function op_items()
  set_items(3)
  return 1
end

-- dispatch(node...): start the roots of a freshly created run
local function op_dispatch()
  local n = 0
  for i = 3, #ARGV do
    local node = ARGV[i]
    if redis.call('HGET', K_STATE, node) == 'pending' then
      start(node)
      n = n + 1
    end
  end
  return n
end

-- create(creator, runs_index, pipeline_index, ttl_s, n_meta, meta k/v..., n_nodes, node/record..., n_pending, node/count...,
-- n_templates, task/template..., root...): a small run in one step (what store.create_run does with a
-- reservation and a MULTI/EXEC for big runs): claim the run id (taken by another run: {0, its creator},
-- nothing written), write the static state, dispatch the roots. Returns {1, id of the last event}: a
-- client waits for what comes after it. created_at is Redis time.
local function op_create()
  local creator = ARGV[3]
  if redis.call('EXISTS', K_META) == 1 then return {0, redis.call('HGET', K_META, 'creator') or ''} end
  local runs_index, pipeline_index, ttl = ARGV[4], ARGV[5], ARGV[6]
  local a = 7
  local function section()  -- a counted list of field/value pairs, as HSET arguments
    local n = tonumber(ARGV[a])
    local out = {}
    for i = a + 1, a + 2 * n do out[#out + 1] = ARGV[i] end
    a = a + 1 + 2 * n
    return out, n
  end
  local meta = section()
  local nodes, total = section()
  local pending, n_pending = section()
  local templates = section()
  local states = {}
  for i = 1, #nodes, 2 do
    states[#states + 1] = nodes[i]
    states[#states + 1] = 'pending'
  end
  redis.call('HSET', K_NODES, unpack(nodes))
  redis.call('HSET', K_STATE, unpack(states))
  if n_pending > 0 then redis.call('HSET', K_PENDING, unpack(pending)) end
  redis.call('HSET', K_TEMPLATES, unpack(templates))
  if #meta > 0 then redis.call('HSET', K_META, unpack(meta)) end
  redis.call('HSET', K_META, 'run_id', RUN_ID, 'creator', creator, 'state', 'pending', 'created_at', NOW_S,
    'total', total, 'remaining', total, 'dispatched', 0, 'ttl_s', ttl)
  redis.call('ZADD', runs_index, NOW_S, RUN_ID)
  redis.call('ZADD', pipeline_index, NOW_S, RUN_ID)  -- the dashboard's per-pipeline list (store.create_run too)
  redis.call('SADD', K_ACTIVE, RUN_ID)
  for i = a, #ARGV do start(ARGV[i]) end
  local last = redis.call('XREVRANGE', K_EVENTS, '+', '-', 'COUNT', 1)
  return {1, last[1] and last[1][1] or '0-0'}
end

-- cached(node, result_json, source_run, ...): settle nodes whose fingerprint has a live cache entry,
-- before anything is dispatched: the result is written, the state is `cached` (terminal, counts as
-- success), the source run is recorded (hosts: "cache of <run>") and children are released as by
-- `succeed`. All are marked before any is released, so a cached child is never dispatched; a child
-- that becomes ready is dispatched by the ledger even if it follows in a Celery chain (its
-- predecessor never runs, so no chain publishes it). A fully cached run is finalized here.
local function op_cached()
  local marked = {}
  for i = 3, #ARGV - 2, 3 do
    local node = ARGV[i]
    if redis.call('HGET', K_STATE, node) == 'pending' then
      redis.call('HSET', K_RESULTS, node, ARGV[i + 1])
      redis.call('HSET', K_HOSTS, node, 'cache of ' .. ARGV[i + 2])
      finish(node, 'cached')
      marked[#marked + 1] = node
    end
  end
  for _, node in ipairs(marked) do
    for _, c in ipairs(release(node, true, {})) do
      if redis.call('HGET', K_STATE, c) == 'pending' then start(c) end
    end
  end
  return #marked
end

-- an attempt died without settling: count it; beyond max_lost the node fails as worker_lost
-- returns true if the node was failed
local function count_lost(node, max_lost)
  if redis.call('HINCRBY', K_LOST, node, 1) > max_lost then
    redis.call('HSET', K_ERRORS, node, cjson.encode({type = 'WorkerLost', reason = 'worker_lost',
      message = 'the worker running this task was lost ' .. (max_lost + 1) .. ' times'}))
    finish(node, 'failed')
    propagate(node, false)
    return true
  end
  return false
end

local function lease_expiry(node)
  local lease = redis.call('HGET', K_LEASES, node)
  if not lease then return nil end
  return tonumber(string.match(lease, '|(%d+)$'))
end

local function owns(node, token)
  local lease = redis.call('HGET', K_LEASES, node)
  return lease ~= false and string.sub(lease, 1, #token + 1) == token .. '|'
end

-- what an attempt needs: {'run', attempt, node_record, parent_result...}; a chunk gets its map's record,
-- and its elements in place of the result of what the map maps over
local function claim_of(node, attempt)
  local m, i = chunk_of(node)
  local raw = redis.call('HGET', K_NODES, m or node)
  local out = {'run', attempt, raw}
  local s = spec(node)
  for _, p in ipairs(s.up) do
    local v
    if m and p == s.map.over then
      v = redis.call('HGET', K_CHUNK_IO, s.map.stream and (chunk_name(p, i) .. ':out') or (node .. ':in'))
    else
      v = redis.call('HGET', K_RESULTS, p)
    end
    out[#out + 1] = v or ''
  end
  return out
end

-- begin(node, host, lease_ms, token, task_id, max_lost): claim an attempt.
-- Returns {'run', attempt, node_record, parent_result...}, {'busy', state, wait_ms} or {reason, state}.
local function op_begin()
  local node, host, lease_ms, token, task_id = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
  local max_lost = tonumber(ARGV[8])
  local st = state_of(node)
  if not st then return {'missing', ''} end
  if TERMINAL[st] then return {'done', st} end
  if redis.call('HGET', K_META, 'cancel_requested') == '1' then
    finish(node, 'cancelled')
    propagate(node, false)
    return {'cancelled', 'cancelled'}
  end
  if st == 'running' and owns(node, token) then
    -- the same call, re-sent after a lost reply: answer as the first time, count nothing twice
    return claim_of(node, tonumber(redis.call('HGET', attempts_at(node))))
  end
  if st == 'running' then
    local expiry = lease_expiry(node)
    if expiry and expiry > NOW_MS then return {'busy', st, expiry - NOW_MS} end
    -- the previous attempt's lease ran out: it was lost with its worker
    if count_lost(node, max_lost) then return {'done', 'failed'} end
  elseif st ~= 'queued' then
    return {'not_ready', st}  -- pending, or retrying (its due time has not come: the scheduler wakes it)
  end
  redis.call('HSET', K_LEASES, node, token .. '|' .. (NOW_MS + lease_ms))
  set_state(node, 'running')
  redis.call('ZREM', K_WAITING, node)
  if chunk_of(node) then redis.call('HSET', K_CHUNK_IO, node .. ':host', host) else redis.call('HSET', K_HOSTS, node, host) end
  redis.call('HSET', K_TASK_IDS, node, task_id)
  local akey, afield = attempts_at(node)
  local attempt = redis.call('HINCRBY', akey, afield, 1)
  if attempt == 1 then stamp(node, 'started') end
  stamp(node, 'attempt_started')
  mark_running_run()
  return claim_of(node, attempt)
end

-- metrics of an attempt that raised: its duration, a retry, a soft time limit (the worker's error says so)
local function count_attempt(node, outcome, err)
  local task = observe(node, outcome)
  if outcome == 'retrying' then metric('retry|' .. task) end
  if string.find(err, '"reason": "timeout"', 1, true) then metric('timeout|' .. task .. '|soft') end
end

-- record a node's failure (error, attempt log) and walk it down the graph: descendants upstream_failed
local function settle_failed(node, err, line)
  redis.call('HSET', K_ERRORS, node, err)
  redis.call('RPUSH', K_LOG, stamped(line))
  finish(node, 'failed')
  propagate(node, false)
  return {'ok', 'failed'}
end

-- settle guard: only the attempt holding the lease may settle a running node
local function settle_guard(node, token)
  local st = state_of(node)
  if not st or TERMINAL[st] then return {'dup', st or ''} end
  if st ~= 'running' or not owns(node, token) then return {'stale', st} end
  return nil
end

-- succeed(node, token, result_json, log_line, items, [map, n, batch_1..batch_n]...): write-once completion +
-- release. `items`: elements (or rows reported) a chunk processed; then the elements of each map over node.
local function op_succeed()
  local node, token, result, line = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local refused = settle_guard(node, token)
  if refused then
    -- a re-sent call (its first reply was lost) finds its own result: that is success, not a duplicate
    if refused[2] == 'succeeded' and result_of(node) == result then return {'ok', 'succeeded'} end
    return refused
  end
  local m = chunk_of(node)
  if m then
    redis.call('HSET', K_CHUNK_IO, node .. ':out', result)
    mincr(m, 'items', tonumber(ARGV[7] or '0') or 0)
  else
    redis.call('HSET', K_RESULTS, node, result)
    set_items(8)
  end
  redis.call('RPUSH', K_LOG, stamped(line))
  local task, d = observe(node, 'succeeded')
  if alerting('slow_on') then
    redis.pcall('XADD', K_SETTLED, 'MAXLEN', '~', SETTLED_MAXLEN, '*', 't', task, 'd', string.format('%.6f', d),
      'r', RUN_ID, 'n', node)
  end
  finish(node, 'succeeded')
  propagate(node, true)
  if CHAIN_TID then return {'ok', 'succeeded', CHAIN_TID} end
  return {'ok', 'succeeded'}
end

-- fail(node, token, error_json, log_line): write-once failure; descendants upstream_failed, `always` run
local function op_fail()
  local node, token, err, line = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local refused = settle_guard(node, token)
  if refused then
    if refused[2] == 'failed' and redis.call('HGET', K_ERRORS, node) == err then return {'ok', 'failed'} end
    return refused
  end
  count_attempt(node, 'failed', err)
  return settle_failed(node, err, line)
end

-- defer(node, token, error_json, log_line, wait_ms): this attempt failed; the next one is due in
-- wait_ms by Redis time (the `due` index, woken by any worker's scheduler: no ETA message held by
-- one worker, no host clock)
local function op_defer()
  local node, token, err, line, wait_ms = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
  if state_of(node) == 'retrying' and owns(node, token) then
    return {'ok', 'retrying'}  -- the same call, re-sent after a lost reply
  end
  local refused = settle_guard(node, token)
  if refused then return refused end
  count_attempt(node, 'retrying', err)
  set_state(node, 'retrying')
  redis.call('HSET', K_ERRORS, node, err)
  redis.call('HSET', K_LEASES, node, token .. '|0')  -- expired, but remembers who deferred
  redis.call('RPUSH', K_LOG, stamped(line))
  schedule(node, wait_ms)
  return {'ok', 'retrying'}
end

-- lost(node, task_id, reason, error_json, log_line, max_lost, retry_wait_ms): the worker's main process
-- saw the attempt die (pool process lost: Celery requeues the message; hard time limit: the message is
-- acked). retry_wait_ms < 0: no retry left.
local function op_lost()
  local node, task_id, reason, err, line = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local max_lost, retry_wait = tonumber(ARGV[8]), tonumber(ARGV[9])
  local st = state_of(node)
  if st ~= 'running' then return {'dup', st or ''} end
  if redis.call('HGET', K_TASK_IDS, node) ~= task_id then return {'stale', st} end
  local task = observe(node, reason)
  if reason == 'timeout' then metric('timeout|' .. task .. '|hard') else metric('lost|' .. task .. '|' .. reason) end
  if reason == 'timeout' and retry_wait >= 0 then metric('retry|' .. task) end
  redis.call('RPUSH', K_LOG, stamped(line))
  redis.call('HSET', K_ERRORS, node, err)
  redis.call('HDEL', K_LEASES, node)
  if reason == 'worker_lost' then
    if count_lost(node, max_lost) then return {'failed', 'failed'} end
    set_state(node, 'queued')  -- the requeued message runs it again
    redis.call('ZADD', K_WAITING, NOW_MS, node)
    return {'requeued', 'queued'}
  end
  if retry_wait >= 0 then
    set_state(node, 'retrying')
    schedule(node, retry_wait)
    return {'retrying', 'retrying'}
  end
  finish(node, 'failed')
  propagate(node, false)
  return {'failed', 'failed'}
end

-- heartbeat(node, token, lease_ms): extend the lease of a live attempt; 0 if it is no longer ours
local function op_heartbeat()
  local node, token, lease_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
  if state_of(node) ~= 'running' or not owns(node, token) then return 0 end
  redis.call('HSET', K_LEASES, node, token .. '|' .. (NOW_MS + lease_ms))
  return 1
end

-- reap(max_lost, stale_ms): running attempts whose lease expired lost their worker; run them again.
-- Safety net: a node queued/retrying for longer than stale_ms (the broker's visibility timeout) has
-- lost its message (a publish that failed after the ledger moved on): dispatch it again. Duplicates
-- are harmless (leases, write-once settles).
local function op_reap()
  local max_lost, stale_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
  local lost_ms, unacked = tonumber(ARGV[5]), ARGV[6]
  local n = 0
  -- A message can vanish for good: kombu pops it (BRPOP) *before* recording it as unacked, so a worker
  -- killed in between loses it. A node queued for lost_ms whose message is neither reserved (kombu's
  -- unacked hash) nor in its queue is dispatched again; one that is found is looked at again lost_ms later.
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', K_WAITING, '-inf', NOW_MS - lost_ms, 'LIMIT', 0, 50)) do
    local tid = redis.call('HGET', K_TASK_IDS, node)
    if state_of(node) == 'queued' and tid then
      local q = spec(node).q
      -- a queue longer than LOST_SCAN is not searched inside the script (it would block Redis): such a
      -- node is left to the visibility-timeout net below. A message kombu restored (re-serialised bytes)
      -- is not recognised and is dispatched once more: a duplicate the lease makes harmless.
      if redis.call('HEXISTS', unacked, tid) == 1 or redis.call('LLEN', q) > LOST_SCAN
          or redis.call('LPOS', q, message_of(node, tid), 'RANK', -1) then
        redis.call('ZADD', K_WAITING, NOW_MS, node)
      else
        redis.call('RPUSH', K_LOG, cjson.encode({task = node, outcome = 'lost', reason = 'message_lost', at = NOW_S}))
        metric('lost|' .. spec(node).task .. '|message_lost')
        dispatch(node, true)
        n = n + 1
      end
    end
  end
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', K_WAITING, '-inf', NOW_MS - stale_ms)) do
    local st = state_of(node)
    if st == 'queued' then
      dispatch(node, true)
      n = n + 1
    else
      redis.call('ZREM', K_WAITING, node)
    end
  end
  local leases = redis.call('HGETALL', K_LEASES)
  for i = 1, #leases, 2 do
    local node = leases[i]
    local expiry = tonumber(string.match(leases[i + 1], '|(%d+)$'))
    if expiry and expiry <= NOW_MS and state_of(node) == 'running' then
      redis.call('HDEL', K_LEASES, node)
      redis.call('RPUSH', K_LOG, cjson.encode({task = node, outcome = 'lost', reason = 'lease_expired', at = NOW_S}))
      metric('lost|' .. spec(node).task .. '|lease_expired')
      if not count_lost(node, max_lost) then dispatch(node, true) end
      n = n + 1
    end
  end
  return n
end

-- retry(): re-run the failed, upstream_failed and cancelled nodes of a finished run, reusing the rest
local function op_retry()
  local state = redis.call('HGET', K_META, 'state')
  if state == 'succeeded' then return {'nothing', state} end
  if state ~= 'failed' and state ~= 'cancelled' then return {'not_finished', state or ''} end
  local all = redis.call('HGETALL', K_STATE)
  local reset, is_reset = {}, {}
  for i = 1, #all, 2 do
    if RETRYABLE[all[i + 1]] then
      reset[#reset + 1] = all[i]
      is_reset[all[i]] = true
      redis.call('HINCRBY', K_META, 'n_' .. all[i + 1], -1)
    end
  end
  if #reset == 0 then return {'nothing', state} end
  for _, n in ipairs(reset) do
    set_state(n, 'pending')
    for _, k in ipairs({K_ATTEMPTS, K_ERRORS, K_LOST, K_BAD, K_PROGRESS, K_LEASES, K_TASK_IDS, K_PENDING}) do
      redis.call('HDEL', k, n)
    end
    redis.call('HDEL', K_TIMES, n .. ':queued', n .. ':started', n .. ':attempt_started', n .. ':finished')
  end
  local ready = {}
  for _, n in ipairs(reset) do
    local waiting = 0
    for _, p in ipairs(spec(n).up) do
      if is_reset[p] then waiting = waiting + 1 end
    end
    if waiting > 0 then redis.call('HSET', K_PENDING, n, waiting) else ready[#ready + 1] = n end
  end
  redis.call('HINCRBY', K_META, 'remaining', #reset)
  redis.call('HINCRBY', K_META, 'retries', 1)
  redis.call('HSET', K_META, 'state', 'running')
  redis.call('HDEL', K_META, 'finished_at', 'cancel_requested')
  run_event('running')
  for i = 1, N_RUN_KEYS do redis.call('PERSIST', KEYS[i]) end
  redis.call('SADD', K_ACTIVE, RUN_ID)
  for _, n in ipairs(ready) do start(n) end
  return {'ok', tostring(#reset)}
end

-- wake(node): its due time came (a retry backoff ended): publish it at the front of its queue.
-- Only the caller that removes the due entry acts, so concurrent schedulers wake it once.
local function op_wake()
  local node = ARGV[3]
  if redis.call('ZREM', K_DUE, due_member(node)) == 0 then return {'gone', ''} end
  local st = state_of(node)
  if st ~= 'retrying' then return {'skip', st or ''} end
  if redis.call('HGET', K_META, 'cancel_requested') == '1' then
    finish(node, 'cancelled')
    propagate(node, false)
    return {'cancelled', 'cancelled'}
  end
  dispatch(node, true)
  return {'ok', 'queued'}
end

-- reject(node, error_json, log_line, task_id, requeue): a worker received this node's message but has no
-- such task registered. If another live worker announces the task (requeue), the node is dispatched again
-- at the head of its queue (at most 5 times); otherwise it fails now with the reason (never dropped
-- silently). A stale copy (not the node's current message) and a node not queued are left alone.
local function op_reject()
  local node, err, line, task_id, requeue = ARGV[3], ARGV[4], ARGV[5], ARGV[6] or '', ARGV[7] == '1'
  local st = state_of(node)
  if st ~= 'queued' then return {'skip', st or ''} end
  local current = redis.call('HGET', K_TASK_IDS, node)
  if task_id ~= '' and current and current ~= task_id then return {'skip', 'stale'} end  -- an old copy
  if requeue and redis.call('HINCRBY', K_LOST, node .. ':unregistered', 1) <= 5 then
    dispatch(node, true)  -- another live worker knows the task (e.g. a rolling deploy): let it take it
    return {'requeued', 'queued'}
  end
  return settle_failed(node, err, line)
end

-- cancel(): persistent flag; every unsettled node becomes cancelled now, so the run
-- reaches a terminal state even if no worker is alive. Returns running nodes' task ids.
local function op_cancel()
  local state = redis.call('HGET', K_META, 'state')
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return {'done', state} end
  redis.call('HSET', K_META, 'cancel_requested', '1')
  local out = {'ok', ''}
  -- chunks in flight first: their maps then settle as cancelled (the rest of a map never starts)
  for _, c in ipairs(redis.call('SMEMBERS', K_MAP_INFLIGHT)) do
    local st = state_of(c)
    if st == 'running' then out[#out + 1] = redis.call('HGET', K_TASK_IDS, c) or '' end
    if st == 'retrying' then redis.call('ZREM', K_DUE, due_member(c)) end
    if st and not TERMINAL[st] then finish_chunk(c, 'cancelled') end
  end
  local all = redis.call('HGETALL', K_STATE)
  for i = 1, #all, 2 do
    local node, st = all[i], all[i + 1]
    if not TERMINAL[st] then
      if st == 'running' then out[#out + 1] = redis.call('HGET', K_TASK_IDS, node) or '' end
      if st == 'retrying' then redis.call('ZREM', K_DUE, due_member(node)) end
      finish(node, 'cancelled')
    end
  end
  return out
end

if OP == 'begin' then return op_begin()
elseif OP == 'succeed' then return op_succeed()
elseif OP == 'fail' then return op_fail()
elseif OP == 'defer' then return op_defer()
elseif OP == 'dispatch' then return op_dispatch()
elseif OP == 'create' then return op_create()
elseif OP == 'cached' then return op_cached()
elseif OP == 'cancel' then return op_cancel()
elseif OP == 'lost' then return op_lost()
elseif OP == 'reap' then return op_reap()
elseif OP == 'heartbeat' then return op_heartbeat()
elseif OP == 'retry' then return op_retry()
elseif OP == 'wake' then return op_wake()
elseif OP == 'reject' then return op_reject()
elseif OP == 'items' then return op_items()
end
return redis.error_reply('chordflow ledger: unknown operation ' .. tostring(OP))
