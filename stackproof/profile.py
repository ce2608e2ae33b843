"""The stack profile: where each file of the stack is and what each control demands.

Defaults describe the layout of the original validation report. A stack overrides
any of them in `stackproof.yml` at its root, with the same nesting as DEFAULTS.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .errors import StackError
from .yamlio import load_yaml

PROFILE_FILE = "stackproof.yml"

DEFAULTS: dict[str, Any] = {
    # which service plays each role the checks need; "" / []: discovered from the compose model
    # (by image, command, entrypoint, ports and mounts, never by name; see stackproof/roles.py)
    "roles": {
        "prometheus": "",
        "alertmanager": "",
        "node_exporter": "",  # the exporter with the textfile collector
        "postgres": "",
        "tls_terminator": "",
        "api_services": [],  # services that mount the API key
        "metrics_service": "",  # API service whose /metrics exports the pool gauges
        "tls_monitor": "",  # a service name, or "cron:<path of a cron file in the repo>"
    },
    # how the compose model is read, as `docker compose --env-file F --profile P config` would
    "compose": {
        "env_files": [],  # relative to the stack dir; default: the compose dir's .env (also --env-file)
        "profiles": [],  # compose profiles to activate, besides COMPOSE_PROFILES
    },
    "paths": {
        "compose": "ai-stack/compose/docker-compose.yml",
        "compose_overrides": [],  # extra -f files; docker-compose.override.yml is picked up as Compose does
        "secrets_dir": "ai-stack/compose/secrets",
        "pool_config": "ai-stack/mcp-servers/config/config.yaml",
        "prometheus_config": "ai-stack/compose/prometheus/prometheus.yml",
        "prometheus_rule_tests": "ai-stack/compose/prometheus/tests",
        "tls_cert": "ai-stack/compose/nginx/certs/server.crt",
        "tls_key": "ai-stack/compose/nginx/certs/server.key",
        "monitor_script": "scripts/monitor-tls-certs.sh",
        "rotate_script": "scripts/rotate-api-key.sh",
    },
    "api_key": {
        "secret": "stack_api_key",
        "min_random_bytes": 32,
        "rotation_runs": 3,
        "file_modes": [0o400, 0o600],  # allowed modes of every secret source file
        "secrets_dir_mode": 0o700,
        "min_entropy_bits": 4.0,  # empirical Shannon entropy per decoded byte
        "rotation_uid": 65534,  # who runs the rotate script when the suite runs as root
    },
    "secrets": {"mode": 0o400},
    "pool": {
        "config_key": "database.postgres.pool",
        "min_size": 20,
        "min_overflow": 30,
        "min_total": 50,
        "size_env": "DB_POOL_SIZE",
        "overflow_env": "DB_POOL_MAX_OVERFLOW",
        "default_max_connections": 100,
        "default_reserved_connections": 3,
        # live: gauges the metrics_service role's /metrics (live.metrics_url) exports for its pool
        "size_metric": "aidb_db_pool_size",
        "overflow_metric": "aidb_db_pool_max_overflow",
        "checked_out_metric": "aidb_db_pool_checked_out",
    },
    "alerts": {
        "min_rules": 10,
        "required": [
            "DatabasePoolExhausted",
            "TLSCertificateExpiringSoon",
            "CircuitBreakerOpen",
            "ServiceHealthCheckFailing",
        ],
        "tls_alert_prefix": "TLS",
    },
    "tls": {
        "min_days_left": 30,
        "warn_days": 30,
        "crit_days": 7,
        "metrics_dir": "/var/lib/node-exporter/textfile",
    },
    "disclosure": {
        "encoding": "cl100k_base",
        "max_tokens": 750,
        "min_savings": 0.60,
        "responses": {
            "health": "ai-stack/mcp-servers/aidb/disclosure/health.json",
            "discovery": "ai-stack/mcp-servers/aidb/disclosure/discovery.json",
            "quickstart": "ai-stack/mcp-servers/aidb/disclosure/quickstart.json",
        },
        "full_docs": "ai-stack/mcp-servers/aidb/disclosure/full-docs.md",
        "endpoints": {
            "health": "/health",
            "discovery": "/discovery/info",
            "quickstart": "/discovery/quickstart",
        },
        "full_docs_endpoint": "/discovery/docs",
    },
    "engine": {
        # swarm: node hostname -> DOCKER_HOST of that node's engine (ssh://user@host in real use); a task on
        # a node not listed here (other than the manager's own) is reported as not proven
        "nodes": {},
    },
    "live": {
        "nginx_port": 443,  # the TLS terminator's container port
        "api_key_header": "X-API-Key",
        "prometheus_port": 9090,
        "metrics_url": "http://127.0.0.1:8000/metrics",  # inside the metrics_service container
        "load_endpoint": "/db/hold?seconds=0.5",
        "load_clients": 50,
    },
}


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise StackError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and key not in ("responses", "endpoints", "nodes"):
            if not isinstance(value, dict):
                raise StackError(f"{where}: {key!r} must be a mapping")
            merged[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


class Profile:
    """Paths and thresholds for one stack: DEFAULTS overridden by the stack's stackproof.yml."""

    def __init__(self, root: Path, data: dict[str, Any], source: Path | None):
        self.root = root
        self.data = data
        self.source = source

    @classmethod
    def load(cls, root: Path) -> "Profile":
        path = root / PROFILE_FILE
        if not path.exists():
            return cls(root, copy.deepcopy(DEFAULTS), None)
        override = load_yaml(path, PROFILE_FILE) or {}
        if not isinstance(override, dict):
            raise StackError(f"{PROFILE_FILE}: must be a mapping")
        return cls(root, _merge(DEFAULTS, override, PROFILE_FILE), path)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    def path(self, key: str) -> Path:
        """Absolute path of one of the stack's files named in `paths`."""
        return self.root / self.data["paths"][key]

    def stack_path(self, relative: str) -> Path:
        return self.root / relative
