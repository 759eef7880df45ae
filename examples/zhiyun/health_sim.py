#!/usr/bin/env python3
"""A stand-in for the zhiyun app's health endpoint, GET /api/health, in the shape the
operations manual documents:

    {"status": "healthy", "components": {"database": "healthy", "qdrant": "healthy"}, "timestamp": "..."}

It checks the components the way the app would: the database with `psql -c 'SELECT 1'` (the
usual PG* variables; PGDATABASE names the app's database) and Qdrant with GET /collections.
The real app also reports redis and llm; this stand-in has neither.

    python3 health_sim.py --port 8000 --qdrant http://127.0.0.1:6333
"""
import argparse
import datetime
import http.server
import json
import subprocess
import sys
import urllib.request


def database():
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-c", "SELECT count(*) FROM messages"],
                       capture_output=True, text=True, timeout=10)
    return "healthy" if r.returncode == 0 else "unhealthy"


def qdrant(url):
    try:
        with urllib.request.urlopen(url + "/collections/knowledge", timeout=5) as r:
            return "healthy" if r.status == 200 else "unhealthy"
    except Exception:
        return "unhealthy"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--qdrant", required=True)
    a = ap.parse_args()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/api/health":
                self.send_error(404)
                return
            comps = {"database": database(), "qdrant": qdrant(a.qdrant)}
            ok = all(v == "healthy" for v in comps.values())
            body = json.dumps({
                "status": "healthy" if ok else "unhealthy",
                "components": comps,
                "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }).encode()
            self.send_response(200 if ok else 503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H)
    print("ready", flush=True)
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
