"""A webhook receiver that prints Alertmanager's notifications, one line per alert.

The docker-compose demo (deploy/docker-compose.yml) runs it as the `webhook`
service so that drift alerts can be seen end to end with
``docker compose logs -f webhook``; it is an example receiver, not a
notifier. Standard library only, so it runs on a bare ``python`` image.

Each line is ``NOTIFY <path> <status> <alertname> severity=… stream=… feature=…``
followed by the alert's ``summary`` annotation when it has one; the path is
the one Alertmanager posted to (``/critical``, ``/warning``), i.e. the route
that picked the receiver.

    python webhook_logger.py --listen 0.0.0.0:5001
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 4 * 1024 * 1024  # far above any notification Alertmanager sends
MONITOR_LABELS = ("severity", "stream", "feature")


def format_notification(path: str, payload: Any) -> list[str]:
    """The log lines for one Alertmanager webhook payload (version 4).

    ``path`` is the request path. A payload that is not an object with an
    ``alerts`` list gives a single ``NOTIFY <path> unreadable payload`` line
    rather than an error: a receiver must not make Alertmanager retry forever.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        return [f"NOTIFY {path} unreadable payload"]
    lines = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict):
            lines.append(f"NOTIFY {path} unreadable alert")
            continue
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        status = alert.get("status", payload.get("status", "?"))
        fields = " ".join(f"{key}={labels.get(key, '-')}" for key in MONITOR_LABELS)
        line = f"NOTIFY {path} {status} {labels.get('alertname', '-')} {fields}"
        summary = annotations.get("summary")
        if summary:
            line += f" :: {summary}"
        lines.append(line)
    return lines


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_error(413)
            return
        body = self.rfile.read(length)
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = None
        for line in format_notification(self.path, payload):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # The NOTIFY lines are the log; access lines would only repeat them.
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints ``listening on http://HOST:PORT`` first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:5001", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), _Handler)
    # As PID 1 in a container SIGTERM has no default action: stop promptly instead.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    print(f"listening on http://{args.listen.rpartition(':')[0]}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
