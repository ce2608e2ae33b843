#!/usr/bin/env python3
"""alert-sink: the webhook receiver of the stack's Alertmanager.

POST /alerts (Alertmanager's webhook payload): one log line per alert (status, name,
labels). GET /alerts: the last 200 notifications' alerts as JSON, for operators and
checks. GET /health: liveness. Standard library only; bodies above 1 MiB are refused.
"""

import argparse
import collections
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
received = collections.deque(maxlen=200)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "alert-sink"
    sys_version = ""

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._reply(200, {"status": "ok"})
        elif self.path == "/alerts":
            with lock:
                self._reply(200, {"alerts": list(received)})
        else:
            self._reply(404, {"detail": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/alerts" or not 0 < length <= MAX_BODY:
            self._reply(400, {"detail": "POST /alerts with an Alertmanager payload"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
            alerts = [a for a in payload.get("alerts", []) if isinstance(a, dict)]
        except (ValueError, AttributeError):
            self._reply(400, {"detail": "not an Alertmanager webhook payload"})
            return
        with lock:
            for alert in alerts:
                entry = {"receiver": payload.get("receiver"), "status": alert.get("status"),
                         "labels": alert.get("labels", {}), "startsAt": alert.get("startsAt"),
                         "endsAt": alert.get("endsAt")}
                received.append(entry)
                print(f"alert {entry['status']}: {entry['labels'].get('alertname')} {json.dumps(entry['labels'])}",
                      flush=True)
        self._reply(200, {"received": len(alerts)})

    def log_message(self, fmt, *args):  # one line per alert is logged above; no access log
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9099)
    args = parser.parse_args()
    ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
