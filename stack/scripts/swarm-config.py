#!/usr/bin/env python3
"""swarm-config.py - turn `docker-compose config --format json` (stdin) into a file `docker stack deploy`
takes (stdout). Compose resolves the variables, .env, anchors and the swarm override (`!reset`); what is
left is what `docker stack deploy` reads differently from Compose:
  - a secret's `mode` is an octal string in Compose's output and an integer for the stack loader;
  - `tmpfs:` on a service is ignored by Swarm: it becomes a tmpfs mount (the services run read-only);
  - `build`, `depends_on` conditions, `container_name`, the top-level `name`, null fields and
    Compose-only mount options are not stack fields.
Standard library only, so it runs wherever up.sh does.
"""
import json
import sys

doc = json.load(sys.stdin)
doc.pop("name", None)
doc = {key: value for key, value in doc.items() if not key.startswith("x-")}
doc["version"] = "3.9"
for name, service in doc.get("services", {}).items():
    service = doc["services"][name] = {key: value for key, value in service.items() if value is not None}
    for key in ("build", "depends_on", "container_name", "restart", "shm_size", "pull_policy"):
        service.pop(key, None)
    for secret in service.get("secrets", []):
        if isinstance(secret.get("mode"), str):
            secret["mode"] = int(secret["mode"], 8)
    for spec in service.pop("tmpfs", None) or []:
        service.setdefault("volumes", []).append({"type": "tmpfs", "target": spec.split(":", 1)[0]})
    for mount in service.get("volumes", []):
        (mount.get("bind") or {}).pop("create_host_path", None)
        (mount.get("volume") or {}).pop("subpath", None)
        for key in ("bind", "volume"):
            if mount.get(key) == {}:
                mount.pop(key)
    if service.get("network_mode") == "none":
        service.pop("network_mode")
        service["networks"] = {}
json.dump(doc, sys.stdout, indent=1)
