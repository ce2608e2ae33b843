"""hybrid-coordinator: coordinates the AI stack's services (FastAPI, port 8001).

GET /health (public), GET /status (X-API-Key: its own database pool and
breaker, plus aidb's liveness), GET /metrics (internal). Uses the same pool
configuration (/etc/ai-stack/config.yaml) and metric names as aidb.
"""

import json
import logging
import os
import time
import urllib.request

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from aistack_common import CircuitOpenError, MetricsMiddleware, service_parts, set_threadpool

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
log = logging.getLogger("hybrid-coordinator")

SERVICE = os.environ.get("SERVICE_NAME", "hybrid-coordinator")
AIDB_URL = os.environ.get("AIDB_URL", "http://aidb:8000").rstrip("/")
STARTED = time.time()

parts = service_parts(SERVICE)
api_key, breaker, db, metrics, THREADS = parts.api_key, parts.breaker, parts.db, parts.metrics, parts.threads

app = FastAPI(title="hybrid-coordinator", version="1.0.0", docs_url=None, redoc_url=None, openapi_url=None)


@app.on_event("startup")
async def _startup():
    set_threadpool(THREADS)


async def require_key(request: Request) -> None:
    if not api_key.verify(request.headers.get("x-api-key")):
        metrics.auth_failures.labels(request.url.path if request.url.path in PROTECTED else "other").inc()
        raise HTTPException(status_code=401, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "ApiKey"})


@app.get("/health")
async def health():
    return {"status": "ok", "service": SERVICE, "version": "1.0.0"}


def _aidb_health() -> dict:
    try:
        with urllib.request.urlopen(f"{AIDB_URL}/health", timeout=3) as resp:
            return {"reachable": True, "status": json.loads(resp.read()).get("status", "unknown")}
    except Exception as exc:  # network errors, bad JSON
        return {"reachable": False, "error": type(exc).__name__}


@app.get("/status", dependencies=[Depends(require_key)])
def status():
    database = {"ok": False}
    try:
        db.run("SELECT 1")
        database = {"ok": True}
    except CircuitOpenError:
        database = {"ok": False, "error": "circuit breaker open"}
    except SQLAlchemyError as exc:
        database = {"ok": False, "error": type(exc).__name__}
    body = {
        "service": SERVICE,
        "uptime_seconds": round(time.time() - STARTED, 1),
        "database": database,
        "pool": db.pool_numbers(),
        "circuit_breaker": breaker.snapshot() if breaker else None,
        "aidb": _aidb_health(),
    }
    return JSONResponse(body, status_code=200 if database["ok"] else 503)


@app.get("/metrics", include_in_schema=False)
async def prometheus_metrics():
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


PUBLIC = ["/health", "/metrics"]
PROTECTED = ["/status"]
metrics.preinit(PUBLIC + PROTECTED, PROTECTED)
app = MetricsMiddleware(app, metrics, app)
