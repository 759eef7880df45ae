"""A stand-in for SsalgTen's backend and frontend (the real ones are a Node.js API with Prisma
migrations and a React app behind nginx; no image of them can be had here). It honours the
contract coffer relies on:

- `backend`: DATABASE_URL (postgresql://USER:PASSWORD@HOST:PORT/DB) from the environment; at
  every start it applies its migrations forward, each in one transaction recorded in
  `_prisma_migrations` (Prisma's table and columns), as `prisma migrate deploy` does;
  GET :3001/api/health answers 200 {"success":true,"message":"SsalgTen API is running",
  "data":{"timestamp","version","environment","uptime"}} once migrated (a build with
  HEALTH=fail migrates and then answers 503); POST :3001/api/nodes stores a node and its first
  heartbeat in ONE transaction and writes /app/data/nodes/<id>.json (the ssalgten-backend-data
  volume); GET :3001/api/stats counts rows.
- builds v1: migration 20240101000000_init (nodes, heartbeat_logs with a foreign key to nodes);
  later builds add 20240601000000_node_location (nodes.country, filled in for every row, and a
  new table visitor_logs): a forward migration with no way back but the old data.
- `frontend`: GET :80/health answers `healthy`.
"""
import datetime
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
VERSION = open("/opt/ssalgten/VERSION").read().strip()
BROKEN = open("/opt/ssalgten/HEALTH").read().strip() == "fail"
STARTED = time.time()
ROLE = sys.argv[1] if len(sys.argv) > 1 else "backend"

MIGRATIONS = [
    ("20240101000000_init", """
CREATE TABLE nodes (id SERIAL PRIMARY KEY, name TEXT NOT NULL, ip TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE heartbeat_logs (id SERIAL PRIMARY KEY,
  node_id INTEGER NOT NULL REFERENCES nodes(id), status TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL DEFAULT now());
"""),
]
if VERSION != "v1":
    MIGRATIONS.append(("20240601000000_node_location", """
ALTER TABLE nodes ADD COLUMN country TEXT;
UPDATE nodes SET country = 'unknown';
CREATE TABLE visitor_logs (id SERIAL PRIMARY KEY, ip TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL DEFAULT now());
"""))


def connection():
    url = os.environ.get("DATABASE_URL", "postgresql://ssalgten:ssalgten@database:5432/ssalgten")
    m = re.match(r"postgres(?:ql)?://([^:]+):([^@]*)@([^:/]+)(?::(\d+))?/(\w+)", url)
    user, password, host, port, db = m.groups()
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="5")
    return ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p",
            port or "5432", "-U", user, "-d", db], env


PSQL, PSQL_ENV = connection() if ROLE == "backend" else (None, None)


def sql(statements):
    r = subprocess.run(PSQL + ["-c", statements], env=PSQL_ENV, capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return [line.split("|") for line in r.stdout.splitlines() if line]


def migrate():
    sql("""CREATE TABLE IF NOT EXISTS _prisma_migrations (id VARCHAR(36) PRIMARY KEY,
  checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL,
  logs TEXT, rolled_back_at TIMESTAMPTZ, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  applied_steps_count INTEGER NOT NULL DEFAULT 0)""")
    done = {r[0] for r in sql("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL")}
    for name, body in MIGRATIONS:
        if name in done:
            continue
        sql("BEGIN;" + body + """
INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
VALUES (md5(random()::text)::uuid::text, md5('%s'), now(), '%s', 1);
COMMIT;""" % (body.replace("'", "''"), name))
        print("applied migration %s" % name)


def answer(handler, status, body, content_type="application/json"):
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class Backend(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/api/health":
            if ready.is_set() and not BROKEN:
                answer(self, 200, {"success": True, "message": "SsalgTen API is running", "data": {
                    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "version": VERSION, "environment": "production",
                    "uptime": time.time() - STARTED}})
            else:
                answer(self, 503, {"success": False, "message": "SsalgTen API is not ready"})
        elif self.path == "/api/stats":
            rows = sql("SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM heartbeat_logs)")
            answer(self, 200, {"nodes": int(rows[0][0]), "heartbeats": int(rows[0][1]),
                               "version": VERSION})
        else:
            answer(self, 404, {"success": False, "error": "not found"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/api/nodes" or not ready.is_set():
            answer(self, 404 if ready.is_set() else 503, {"success": False})
            return
        name = "node-%d" % time.time_ns()
        try:
            rows = sql("BEGIN; INSERT INTO nodes (name, ip) VALUES ('%s', '10.0.0.1');"
                       "INSERT INTO heartbeat_logs (node_id, status) VALUES (currval('nodes_id_seq'), 'online');"
                       "COMMIT; SELECT currval('nodes_id_seq');" % name)
            nid = rows[-1][0]
            os.makedirs("/app/data/nodes", exist_ok=True)
            with open("/app/data/nodes/%s.json" % nid, "w") as f:
                json.dump({"id": int(nid), "name": name}, f)
            answer(self, 200, {"success": True, "id": int(nid)})
        except Exception as e:
            answer(self, 500, {"success": False, "error": str(e)})


class Frontend(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/health":
            answer(self, 200, "healthy\n", "text/plain")
        else:
            answer(self, 200, "<!doctype html><title>SsalgTen %s</title>" % VERSION, "text/html")


def start():
    while True:
        try:
            migrate()
            break
        except Exception as e:  # the database not up yet: Prisma retries too
            print("waiting for the database: %s" % e)
            time.sleep(1)
    ready.set()
    print("ssalgten backend stand-in %s ready" % VERSION)


ready = threading.Event()
if ROLE == "frontend":
    http.server.ThreadingHTTPServer(("0.0.0.0", 80), Frontend).serve_forever()
else:
    threading.Thread(target=start, daemon=True).start()
    http.server.ThreadingHTTPServer(("0.0.0.0", 3001), Backend).serve_forever()
