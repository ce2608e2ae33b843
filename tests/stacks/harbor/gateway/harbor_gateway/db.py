"""The gateway's database access: one asyncpg pool, behind the "cooldown" breaker.

Settings come from general_settings.database of the config (see config/litellm.yaml).
The breaker's state is the gauge harbor_db_breaker_state{breaker="postgres"}:
0 closed, 1 open (cooled down: calls fail fast with 503), 2 probing (half-open).
"""

import time

import asyncpg
from prometheus_client import Gauge

STATE = Gauge("harbor_db_breaker_state", "database breaker: 0 closed, 1 open, 2 probing", ["breaker"])
POOL_MAX = Gauge("harbor_db_pool_max_connections", "pool cap of this process")
POOL_IN_USE = Gauge("harbor_db_pool_in_use", "connections handed out")


class CooledDown(Exception):
    """The database is cooling down: answered 503 without calling it."""


class Database:
    def __init__(self, settings: dict, password: str):
        self.s, self.password = settings, password
        self.fails, self.opened, self.probes = 0, 0.0, 0
        STATE.labels("postgres").set(0)
        POOL_MAX.set(settings["max_connections"])

    async def start(self):
        s = self.s
        self.pool = await asyncpg.create_pool(
            host=s["host"], port=s["port"], user=s["user"], password=self.password, database=s["name"],
            min_size=s["min_connections"], max_size=s["max_connections"], timeout=s["pool_timeout"])

    async def fetch(self, query: str, *args):
        state = self._state()
        if state == 1 or (state == 2 and self.probes >= self.s["cooldown_probe_requests"]):
            raise CooledDown("circuit breaker open: database cooling down")
        self.probes += state == 2
        try:
            async with self.pool.acquire(timeout=self.s["pool_timeout"]) as conn:
                POOL_IN_USE.inc()
                try:
                    if self.s["pool_pre_ping"]:
                        await conn.execute("SELECT 1")
                    rows = await conn.fetch(query, *args)
                finally:
                    POOL_IN_USE.dec()
        except Exception:
            self.fails += 1
            if state == 2 or self.fails >= self.s["allowed_fails"]:
                self.opened, self.probes = time.monotonic(), 0
                STATE.labels("postgres").set(1)
            raise
        self.fails, self.probes = 0, 0
        STATE.labels("postgres").set(0)
        return rows

    def _state(self) -> int:
        if self.opened and time.monotonic() - self.opened >= self.s["cooldown_time"]:
            self.opened = 0.0
            STATE.labels("postgres").set(2)
        return int(STATE.labels("postgres")._value.get())
