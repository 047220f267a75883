"""The notification outbox in Redis: which runs' ends are due to be announced, and who is announcing them.

The ledger ZADDs a run to ``chordflow:notify`` (score: epoch ms by Redis TIME) in the same atomic step
that finalizes it. A worker *claims* the lowest due entry by re-scoring it to now + lease in one script;
that new score is the claim's fencing token: a later claim is made only once the score has passed, so
its token is strictly greater and never equal to an earlier one. Every later step (extend, reschedule,
remove) acts only while the score is still the caller's token, so a worker whose lease ran out (or
whose run the ledger enqueued again after a ``retry``) changes nothing. A worker that dies while
delivering simply stops extending; the entry becomes due again at the lease's end and another worker
claims it: at least once.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from orchestrator import keys

_CLAIM = """
-- claim(lease_ms): the lowest-scored member due by Redis TIME, re-scored to now + lease
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #due == 0 then
  local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = -1
  if #nxt > 0 then wait = math.max(0, tonumber(nxt[2]) - now) end
  return {'', string.format('%.0f', wait), string.format('%.0f', now)}
end
local token = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], token, due[1])
return {due[1], string.format('%.0f', token), string.format('%.0f', now)}
"""

_SETTLE = """
-- settle(run_id, token, ms): only while the member's score is still `token`:
-- ms = -1 removes it (done); else re-scores it to now + ms (extend the lease, or retry later)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return '' end
if tonumber(ARGV[3]) < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'done'
end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], at, ARGV[1])
return string.format('%.0f', at)
"""


@dataclass(frozen=True)
class Claim:
    run_id: str
    token: str  #: the entry's score while it is ours (epoch ms of the lease's end)
    now_ms: int  #: Redis time of the claim


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)

    def claim(self, lease_ms: int) -> tuple[Claim | None, float | None]:
        """The next due run, now ours for ``lease_ms``; else (None, seconds until one is due or None)."""
        member, token, now = self._claim(keys=[keys.NOTIFY], args=[lease_ms])
        if not member:
            wait_ms = int(token)
            return None, None if wait_ms < 0 else wait_ms / 1000
        return Claim(member, token, int(now)), 0.0

    def extend(self, claim: Claim, lease_ms: int) -> Claim | None:
        """Keep the claim another ``lease_ms``; None if it is no longer ours."""
        token = self._settle(keys=[keys.NOTIFY], args=[claim.run_id, claim.token, lease_ms])
        return Claim(claim.run_id, token, claim.now_ms) if token else None

    def retry_in(self, claim: Claim, delay_s: float) -> bool:
        """Give the entry back, due again in ``delay_s`` (a target is waiting out its backoff)."""
        return bool(self._settle(keys=[keys.NOTIFY], args=[claim.run_id, claim.token, max(1, int(delay_s * 1000))]))

    def done(self, claim: Claim) -> bool:
        """Remove the entry, if it is still ours (if the ledger enqueued the run again, it stays)."""
        return bool(self._settle(keys=[keys.NOTIFY], args=[claim.run_id, claim.token, -1]))
