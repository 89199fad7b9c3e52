"""The Redis store of rate budgets: one Lua script per reservation, on the server's clock.

Needs the `redis` package (`pip install 'flexllm[redis]'`). One hash per budget, key
`flexllm:budget:{<name>}` (the braces keep it in one cluster slot), fields = dimensions ("qps", "rpm",
"tpm") holding their TAT and "pause" holding "paused until", as decimal seconds of the server's clock.

The Lua script reads the server's `TIME` (so hosts with skewed clocks share one budget), runs the same
GCRA as `_stores.gcra` over the dimensions given in ARGV, writes the new TATs and sets the key to expire
when its last timestamp is in the past (an expired budget and a fresh one behave the same, so Redis keeps
nothing that no longer matters). Modes: "reserve", "try" (reserve only if free now), "delay" (read
only), "settle" (refund/charge, floors from provider headers, a 429 pause). The reply is the wait as a
decimal string (Lua numbers would be truncated to integers), or "busy" for a "try" that is not free.
"""
from __future__ import annotations

import os
import threading
from typing import Mapping, Optional

import redis

from ._store_common import Dims, StoreUnavailable, safe_url, url_secrets

__all__ = ["RedisStore"]

_LUA = """
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, mode = KEYS[1], ARGV[1]
local tats = {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do tats[flat[i]] = tonumber(flat[i + 1]) end
local new = {}
local result = '0'
if mode == 'settle' then
  local pause = tonumber(ARGV[2])
  local nshift = tonumber(ARGV[3])
  local i = 4
  for _ = 1, nshift do
    local dim, delta = ARGV[i], tonumber(ARGV[i + 1])
    if tats[dim] and delta ~= 0 then new[dim] = tats[dim] + delta end
    i = i + 2
  end
  local nfloor = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nfloor do
    local dim, floor = ARGV[i], now + tonumber(ARGV[i + 1])
    local current = new[dim] or tats[dim] or now
    if floor > current then new[dim] = floor end
    i = i + 2
  end
  if pause > 0 and now + pause > (tats['pause'] or 0) then new['pause'] = now + pause end
else
  local start = math.max(now, tats['pause'] or 0)
  local n = (#ARGV - 1) / 3
  for j = 0, n - 1 do
    local tat, tol = tats[ARGV[2 + 3 * j]], tonumber(ARGV[4 + 3 * j])
    if tat and tat - tol > start then start = tat - tol end
  end
  if mode == 'delay' then return string.format('%.6f', start - now) end
  if mode == 'try' and start > now then return 'busy' end
  for j = 0, n - 1 do
    local dim, cost = ARGV[2 + 3 * j], tonumber(ARGV[3 + 3 * j])
    local tat = tats[dim]
    if tat == nil or tat < start then tat = start end
    new[dim] = tat + cost
  end
  result = string.format('%.6f', start - now)
end
local latest = now
for dim, tat in pairs(tats) do if new[dim] == nil and tat > latest then latest = tat end end
local args = {}
for dim, tat in pairs(new) do
  args[#args + 1] = dim
  args[#args + 1] = string.format('%.6f', tat)
  if tat > latest then latest = tat end
end
if #args > 0 then
  redis.call('HSET', key, unpack(args))
  redis.call('PEXPIRE', key, math.ceil((latest - now) * 1000) + 1000)
end
return result
"""

_SOCKET_TIMEOUT = 5.0


class RedisStore:
    """Budgets on a Redis server, shared by every host using it. Connects lazily, once per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._pid = -1
        self._client: Optional[redis.Redis] = None
        self._script = None

    def _script_for_process(self):
        if self._script is not None and self._pid == os.getpid():
            return self._script
        with self._lock:
            if self._script is None or self._pid != os.getpid():
                # after fork the parent's sockets must not be shared: a new pool for this process
                client = redis.Redis.from_url(self.url, socket_timeout=_SOCKET_TIMEOUT,
                                              socket_connect_timeout=_SOCKET_TIMEOUT, health_check_interval=30)
                self._client, self._script, self._pid = client, client.register_script(_LUA), os.getpid()
            return self._script

    def _run(self, name: str, args: list) -> str:
        try:
            reply = self._script_for_process()(keys=[f"flexllm:budget:{{{name}}}"], args=args)
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"Redis at {safe_url(self.url)}: {type(exc).__name__}: "
                                   f"{_without_password(str(exc), self.url)}") from None
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    @staticmethod
    def _dims(mode: str, dims: Dims) -> list:
        args: list = [mode]
        for dim, cost, tolerance in dims:
            args += [dim, repr(float(cost)), repr(float(tolerance))]
        return args

    def reserve(self, name: str, dims: Dims, only_if_free: bool = False) -> Optional[float]:
        """Reserve a start in one script call; seconds to wait, or None when `only_if_free` and busy."""
        reply = self._run(name, self._dims("try" if only_if_free else "reserve", dims))
        return None if reply == "busy" else max(0.0, float(reply))

    def delay(self, name: str, dims: Dims) -> float:
        """Seconds until a start would be free, reserving nothing."""
        return max(0.0, float(self._run(name, self._dims("delay", dims))))

    def settle(self, name: str, shifts: Mapping[str, float], floors: Mapping[str, float], pause: float) -> None:
        """Apply what a reply taught, in one script call."""
        args: list = ["settle", repr(float(pause)), str(len(shifts))]
        for dim, delta in shifts.items():
            args += [dim, repr(float(delta))]
        args.append(str(len(floors)))
        for dim, seconds in floors.items():
            args += [dim, repr(float(seconds))]
        self._run(name, args)

    def check(self) -> None:
        """Reach the server now (PING), so a wrong URL fails at construction rather than mid-batch."""
        self._script_for_process()
        try:
            self._client.ping()  # type: ignore[union-attr]
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"Redis at {safe_url(self.url)}: {type(exc).__name__}: "
                                   f"{_without_password(str(exc), self.url)}") from None


def _without_password(text: str, url: str) -> str:
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text
