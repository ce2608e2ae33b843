"""lighthouse API: beacons near a point, behind an API key; progressive disclosure docs."""

import hmac
import json
import os
from pathlib import Path

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .breaker import CircuitOpen
from .db import query

DISCLOSURE = Path(__file__).parent / "static" / "disclosure"
API_KEY = Path(os.environ.get("API_KEY_FILE", "/run/secrets/api_key")).read_text().strip()
app = FastAPI(docs_url=None, redoc_url=None)


def need_key(key: str | None):
    if not key or not hmac.compare_digest(key, API_KEY):
        raise HTTPException(401, "missing or wrong X-API-Key")


@app.exception_handler(CircuitOpen)
def refused(_, exc):
    return JSONResponse({"detail": str(exc)}, status_code=503)


@app.get("/health")
def health():
    return json.loads((DISCLOSURE / "health.json").read_text())


@app.get("/discovery/{level}")
def discovery(level: str, x_api_key: str | None = Header(None)):
    if level == "docs":
        need_key(x_api_key)
        return PlainTextResponse((DISCLOSURE / "full-docs.md").read_text())
    if level not in ("info", "quickstart"):
        raise HTTPException(404)
    return json.loads((DISCLOSURE / ("discovery.json" if level == "info" else "quickstart.json")).read_text())


@app.get("/v1/beacons")
def beacons(near: str, x_api_key: str | None = Header(None)):
    need_key(x_api_key)
    lat, lon = (float(v) for v in near.split(","))
    return query("SELECT id, name FROM beacons ORDER BY geom <-> ST_MakePoint(:lon, :lat) LIMIT 20", lat=lat, lon=lon)


@app.get("/metrics")
def metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
