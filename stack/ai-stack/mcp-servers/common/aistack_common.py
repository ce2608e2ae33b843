"""Shared runtime for the AI stack services (aidb, hybrid-coordinator).

* configuration from /etc/ai-stack/config.yaml (DB_POOL_SIZE / DB_POOL_MAX_OVERFLOW
  in the environment override the pool size / max_overflow);
* API key check against /run/secrets/stack_api_key (re-read when the file
  changes, constant-time comparison);
* a SQLAlchemy QueuePool to PostgreSQL wrapped in a circuit breaker;
* Prometheus metrics (pool gauges read live at scrape time, breaker state,
  request counter / latency histogram / auth failures, pre-initialised).
Secrets are never logged or returned.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger("aistack")

CONFIG_PATH = os.environ.get("AI_STACK_CONFIG", "/etc/ai-stack/config.yaml")


def load_config(path: str = CONFIG_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return int(default)
    return int(raw)


@dataclass(frozen=True)
class DbSettings:
    host: str
    port: int
    database: str
    user: str
    password_file: str
    connect_timeout: int
    pool_size: int
    max_overflow: int
    pool_timeout: float
    recycle: int
    pre_ping: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "DbSettings":
        pg = (cfg.get("database") or {}).get("postgres") or {}
        pool = pg.get("pool") or {}
        return cls(
            host=str(pg.get("host", "postgres")),
            port=int(pg.get("port", 5432)),
            database=str(pg.get("database", "aidb")),
            user=str(pg.get("user", "aidb")),
            password_file=str(pg.get("password_file", "/run/secrets/postgres_password")),
            connect_timeout=int(pg.get("connect_timeout", 5)),
            pool_size=_env_int("DB_POOL_SIZE", pool.get("size", 20)),
            max_overflow=_env_int("DB_POOL_MAX_OVERFLOW", pool.get("max_overflow", 30)),
            pool_timeout=float(pool.get("timeout", 30)),
            recycle=int(pool.get("recycle", 1800)),
            pre_ping=bool(pool.get("pre_ping", True)),
        )


class ApiKey:
    """The shared API key, read from the secret file and re-read when it changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._key: bytes | None = None

    def _current(self) -> bytes | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    with open(self.path, "rb") as fh:
                        key = fh.read().strip()
                except OSError as exc:
                    log.error("cannot read API key file %s: %s", self.path, exc.strerror)
                    return None
                self._key = key or None
                self._stamp = stamp
            return self._key

    def verify(self, provided: str | None) -> bool:
        key = self._current()
        if not key or not provided:
            return False
        return hmac.compare_digest(provided.strip().encode("utf-8", "replace"), key)


class CircuitOpenError(Exception):
    def __init__(self, retry_after: float):
        super().__init__("circuit breaker open")
        self.retry_after = retry_after


class CallTimeout(SQLAlchemyError):
    """A database call took longer than the breaker's call_timeout (e.g. a hung or paused server)."""


@dataclass(frozen=True)
class BreakerSettings:
    """circuit_breaker.<dependency> in config.yaml; every key is required (no silent default)."""

    failure_threshold: int
    reset_timeout: float
    half_open_max_calls: int
    call_timeout: float

    @classmethod
    def from_config(cls, cfg: dict, dependency: str) -> "BreakerSettings | None":
        """None when the config declares no breaker for `dependency` (the service then runs without one)."""
        section = (cfg.get("circuit_breaker") or {}).get(dependency)
        if section is None:
            return None
        settings = cls(int(section["failure_threshold"]), float(section["reset_timeout"]),
                       int(section["half_open_max_calls"]), float(section["call_timeout"]))
        if settings.failure_threshold < 1 or settings.reset_timeout <= 0 or settings.half_open_max_calls < 1 \
                or settings.call_timeout <= 0:
            raise ValueError(f"circuit_breaker.{dependency}: every value must be positive: {settings}")
        return settings


class CircuitBreaker:
    """Consecutive-failure breaker: closed (0) -> open (1) -> half-open (2) -> closed.

    `failure_threshold` consecutive failures open it; while open every call is refused at once
    (CircuitOpenError, no dependency call). `reset_timeout` seconds later it is half-open: up to
    `half_open_max_calls` trial calls go through; one success closes it, one failure re-opens it.
    Every transition happens under one lock, so concurrent callers see one consistent state."""

    CLOSED, OPEN, HALF_OPEN = 0, 1, 2
    NAMES = {0: "closed", 1: "open", 2: "half-open"}

    def __init__(self, name: str, settings: BreakerSettings):
        self.name = name
        self.failure_threshold = settings.failure_threshold
        self.reset_timeout = settings.reset_timeout
        self.half_open_max_calls = settings.half_open_max_calls
        self.call_timeout = settings.call_timeout
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0

    @property
    def state(self) -> int:
        with self._lock:
            if self._state == self.OPEN and time.monotonic() - self._opened_at >= self.reset_timeout:
                return self.HALF_OPEN
            return self._state

    def before_call(self) -> None:
        with self._lock:
            if self._state == self.OPEN:
                elapsed = time.monotonic() - self._opened_at
                if elapsed < self.reset_timeout:
                    raise CircuitOpenError(self.reset_timeout - elapsed)
                self._state, self._trials = self.HALF_OPEN, 0
                log.info("circuit breaker %s half-open: trial calls allowed", self.name)
            if self._state == self.HALF_OPEN:
                if self._trials >= self.half_open_max_calls:
                    raise CircuitOpenError(1.0)
                self._trials += 1

    def success(self) -> None:
        with self._lock:
            if self._state != self.CLOSED:
                log.info("circuit breaker %s closed", self.name)
            self._state, self._failures, self._trials = self.CLOSED, 0, 0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == self.HALF_OPEN or (self._state == self.CLOSED and self._failures >= self.failure_threshold):
                log.warning("circuit breaker %s opened after %d failure(s)", self.name, self._failures)
                self._state, self._opened_at, self._trials = self.OPEN, time.monotonic(), 0

    def neutral(self) -> None:
        """The call did not reach the dependency (e.g. pool timeout): release a trial."""
        with self._lock:
            self._trials = max(0, self._trials - 1)

    def snapshot(self) -> dict:
        state = self.state
        with self._lock:
            return {
                "name": self.name,
                "state": self.NAMES[state],
                "consecutive_failures": self._failures,
                "failure_threshold": self.failure_threshold,
                "reset_timeout": self.reset_timeout,
                "half_open_max_calls": self.half_open_max_calls,
                "call_timeout": self.call_timeout,
            }


class Database:
    """SQLAlchemy pool to PostgreSQL; every call goes through the breaker, when there is one.

    A call runs on a worker thread and is waited for at most the breaker's call_timeout (plus the
    time the call itself asks for): a hung server (paused, network black hole) then counts as a
    failure instead of holding the request, because libpq has no client-side query timeout."""

    def __init__(self, settings: DbSettings, breaker: CircuitBreaker | None, application_name: str):
        self.settings = settings
        self.breaker = breaker
        self.application_name = application_name
        self._engine = None
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=settings.pool_size + settings.max_overflow,
                                           thread_name_prefix="db")

    @property
    def engine(self):
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    s = self.settings
                    with open(s.password_file, encoding="utf-8") as fh:
                        password = fh.read().strip()
                    url = URL.create("postgresql+psycopg2", username=s.user, password=password,
                                     host=s.host, port=s.port, database=s.database)
                    self._engine = create_engine(
                        url,
                        pool_size=s.pool_size,
                        max_overflow=s.max_overflow,
                        pool_timeout=s.pool_timeout,
                        pool_recycle=s.recycle,
                        pool_pre_ping=s.pre_ping,
                        connect_args={"connect_timeout": s.connect_timeout,
                                      "application_name": self.application_name},
                        future=True,
                    )
        return self._engine

    def pool_numbers(self) -> dict:
        s = self.settings
        numbers = {"size": s.pool_size, "max_overflow": s.max_overflow, "timeout": s.pool_timeout,
                   "checked_out": 0, "checked_in": 0, "overflow": 0}
        if self._engine is not None:
            pool = self._engine.pool
            numbers.update(checked_out=pool.checkedout(), checked_in=pool.checkedin(),
                           overflow=max(0, pool.overflow()))
        return numbers

    def _execute(self, sql: str, params: dict):
        with self.engine.connect() as conn:
            value = conn.execute(text(sql), params).scalar()
            conn.rollback()
        return value

    def run(self, sql: str, expected_seconds: float = 0.0, **params):
        """Run one statement on a pooled connection; returns the first column of the first row.
        `expected_seconds`: how long the statement itself is meant to take (added to call_timeout)."""
        breaker = self.breaker
        if breaker is None:
            return self._execute(sql, params)
        breaker.before_call()
        future = self._workers.submit(self._execute, sql, params)
        try:
            value = future.result(timeout=breaker.call_timeout + expected_seconds)
        except FutureTimeout:
            breaker.failure()
            raise CallTimeout(f"no answer within {breaker.call_timeout + expected_seconds:g}s") from None
        except PoolTimeoutError:
            breaker.neutral()
            raise
        except (SQLAlchemyError, OSError):
            breaker.failure()
            raise
        breaker.success()
        return value


class PoolCollector:
    """Pool and breaker gauges computed at scrape time."""

    def __init__(self, db: Database):
        self.db = db

    def describe(self):
        return []

    def collect(self):
        n = self.db.pool_numbers()
        for name, key, doc in (
            ("aidb_db_pool_size", "size", "Configured SQLAlchemy pool size."),
            ("aidb_db_pool_max_overflow", "max_overflow", "Configured pool max_overflow."),
            ("aidb_db_pool_checked_out", "checked_out", "Pool connections currently checked out."),
            ("aidb_db_pool_overflow", "overflow", "Overflow connections currently open."),
        ):
            yield GaugeMetricFamily(name, doc, value=n[key])
        if self.db.breaker is not None:
            g = GaugeMetricFamily("aidb_circuit_breaker_state",
                                  "Circuit breaker state: 0 closed, 1 open, 2 half-open.", labels=["breaker"])
            g.add_metric([self.db.breaker.name], self.db.breaker.state)
            yield g


class Metrics:
    def __init__(self, db: Database):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PoolCollector(db))
        self.requests = Counter("aidb_http_requests_total", "HTTP requests served.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("aidb_http_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.auth_failures = Counter("aidb_auth_failures_total", "Requests rejected for a missing or wrong API key.",
                                     ["route"], registry=self.registry)

    def preinit(self, routes, protected):
        for path in routes:
            self.requests.labels("GET", path, "200")
            self.latency.labels("GET", path)
        for path in protected:
            self.requests.labels("GET", path, "401")
            self.auth_failures.labels(path)


class MetricsMiddleware:
    """Pure ASGI middleware: count and time requests by route template."""

    def __init__(self, app, metrics: Metrics, router_app):
        self.app = app
        self.metrics = metrics
        self.router_app = router_app

    def _route(self, scope) -> str:
        from starlette.routing import Match
        for route in self.router_app.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(scope["method"], route, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)


def set_threadpool(size: int) -> None:
    """Sync endpoints run in anyio's default thread limiter; raise its size."""
    import anyio.to_thread
    anyio.to_thread.current_default_thread_limiter().total_tokens = int(size)


@dataclass
class ServiceParts:
    """What every API service of the stack is built from, all configured by config.yaml."""

    config: dict
    threads: int
    api_key: ApiKey
    breaker: CircuitBreaker | None
    db: Database
    metrics: Metrics


def service_parts(service: str) -> ServiceParts:
    """The key check, the circuit breaker around the pooled database (when the config declares
    one) and the metrics of `service`."""
    config = load_config()
    security = config.get("security") or {}
    server = config.get("server") or {}
    breaker_settings = BreakerSettings.from_config(config, "postgres")
    breaker = CircuitBreaker("postgres", breaker_settings) if breaker_settings else None
    if breaker is None:
        log.warning("%s: no circuit_breaker.postgres in the config: database calls run without a breaker", service)
    db = Database(DbSettings.from_config(config), breaker, service)
    return ServiceParts(
        config=config,
        threads=max(60, int(server.get("worker_threads", 100))),
        api_key=ApiKey(security.get("api_key_file", "/run/secrets/stack_api_key")),
        breaker=breaker,
        db=db,
        metrics=Metrics(db),
    )
