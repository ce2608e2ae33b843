"""The database: an SQLAlchemy pool sized by the environment, and its breaker.

The pool is configured only through the environment (DB_POOL_SIZE, DB_POOL_OVERFLOW,
DB_POOL_TIMEOUT, DB_POOL_PRE_PING: see docker-compose.prod.yml); the breaker in code.
"""

import os
from pathlib import Path

from prometheus_client import Gauge
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from .breaker import CircuitBreaker

# every database call of the api and the worker goes through this breaker
db_breaker = CircuitBreaker("postgres", fail_max=5, reset_timeout=30, half_open_max=1)

engine = create_engine(
    URL.create("postgresql+psycopg", username=os.environ["DB_USER"], host=os.environ["DB_HOST"],
               database=os.environ["DB_NAME"], password=Path(os.environ["DB_PASSWORD_FILE"]).read_text().strip()),
    pool_size=int(os.environ.get("DB_POOL_SIZE", "20")),
    max_overflow=int(os.environ.get("DB_POOL_OVERFLOW", "30")),
    pool_timeout=float(os.environ.get("DB_POOL_TIMEOUT", "30")),
    pool_pre_ping=os.environ.get("DB_POOL_PRE_PING", "true") == "true",
    connect_args={"connect_timeout": 5},
)
Gauge("lighthouse_db_pool_size", "pool size").set_function(lambda: engine.pool.size())
Gauge("lighthouse_db_pool_overflow", "max overflow").set_function(lambda: engine.pool._max_overflow)
Gauge("lighthouse_db_pool_checked_out", "connections in use").set_function(lambda: engine.pool.checkedout())


def query(sql: str, **params):
    def run():
        with engine.connect() as conn:
            return conn.execute(text(sql), params).mappings().all()

    return db_breaker.call(run)
