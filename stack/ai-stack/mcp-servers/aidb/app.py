"""aidb: the AI stack's database gateway (FastAPI, port 8000).

Progressive disclosure: /health, /discovery/info, /discovery/quickstart are
public and served verbatim from /app/disclosure; /discovery/docs and /db/*
need the X-API-Key header. /metrics is for Prometheus on the internal network.
"""

import logging
import os
import time

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from aistack_common import CallTimeout, CircuitOpenError, MetricsMiddleware, service_parts, set_threadpool

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
log = logging.getLogger("aidb")

SERVICE = os.environ.get("SERVICE_NAME", "aidb")
DISCLOSURE_DIR = os.environ.get("DISCLOSURE_DIR", "/app/disclosure")

parts = service_parts(SERVICE)
api_key, breaker, db, metrics, THREADS = parts.api_key, parts.breaker, parts.db, parts.metrics, parts.threads
MAX_HOLD = float((parts.config.get("server") or {}).get("max_hold_seconds", 10))

app = FastAPI(title="aidb", version="1.0.0", docs_url=None, redoc_url=None, openapi_url=None)


@app.on_event("startup")
async def _startup():
    set_threadpool(THREADS)
    s = db.settings
    log.info("aidb ready: pool size=%d max_overflow=%d timeout=%ss, threadpool=%d",
             s.pool_size, s.max_overflow, s.pool_timeout, THREADS)


def _disclosure(name: str, media_type: str) -> Response:
    try:
        with open(os.path.join(DISCLOSURE_DIR, name), "rb") as fh:
            body = fh.read()
    except OSError:
        raise HTTPException(status_code=500, detail=f"disclosure file {name} unavailable")
    return Response(content=body, media_type=media_type)


async def require_key(request: Request) -> None:
    if not api_key.verify(request.headers.get("x-api-key")):
        metrics.auth_failures.labels(request.url.path if request.url.path in PROTECTED else "other").inc()
        raise HTTPException(status_code=401, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "ApiKey"})


@app.exception_handler(CircuitOpenError)
async def _circuit_open(request: Request, exc: CircuitOpenError):
    return JSONResponse({"detail": "circuit breaker open"}, status_code=503,
                        headers={"Retry-After": str(max(1, int(exc.retry_after + 0.999)))})


@app.exception_handler(CallTimeout)
async def _call_timeout(request: Request, exc: CallTimeout):
    return JSONResponse({"detail": "database call timed out"}, status_code=503, headers={"Retry-After": "5"})


@app.exception_handler(PoolTimeoutError)
async def _pool_timeout(request: Request, exc: PoolTimeoutError):
    return JSONResponse({"detail": "database pool timeout"}, status_code=503, headers={"Retry-After": "5"})


@app.exception_handler(SQLAlchemyError)
async def _db_error(request: Request, exc: SQLAlchemyError):
    log.warning("database error: %s", type(exc).__name__)
    return JSONResponse({"detail": "database error"}, status_code=503, headers={"Retry-After": "5"})


@app.get("/health")
async def health():
    return _disclosure("health.json", "application/json")


@app.get("/discovery/info")
async def discovery_info():
    return _disclosure("discovery.json", "application/json")


@app.get("/discovery/quickstart")
async def discovery_quickstart():
    return _disclosure("quickstart.json", "application/json")


@app.get("/discovery/docs", dependencies=[Depends(require_key)])
async def discovery_docs():
    return _disclosure("full-docs.md", "text/markdown; charset=utf-8")


@app.get("/db/pool", dependencies=[Depends(require_key)])
async def db_pool():
    return {"pool": db.pool_numbers(), "circuit_breaker": breaker.snapshot() if breaker else None}


@app.get("/db/hold", dependencies=[Depends(require_key)])
def db_hold(seconds: float = Query(0.5, ge=0, le=MAX_HOLD)):
    start = time.perf_counter()
    db.run("SELECT pg_sleep(:s)", expected_seconds=seconds, s=seconds)
    return {"held_seconds": seconds, "elapsed_seconds": round(time.perf_counter() - start, 3),
            "checked_out_after": db.pool_numbers()["checked_out"]}


@app.get("/metrics", include_in_schema=False)
async def prometheus_metrics():
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


PUBLIC = ["/health", "/discovery/info", "/discovery/quickstart", "/metrics"]
PROTECTED = ["/discovery/docs", "/db/pool", "/db/hold"]
metrics.preinit(PUBLIC + PROTECTED, PROTECTED)
app = MetricsMiddleware(app, metrics, app)
