"""A stand-in for cskefu's contact-center (the real one is a Spring Boot app; no image of it can
be had here). It honours the contract coffer relies on:

- configuration from the environment, as the upstream compose file passes it:
  SPRING_DATASOURCE_URL (jdbc:mysql://HOST:PORT/DB?...), SPRING_DATASOURCE_USERNAME,
  SPRING_DATASOURCE_PASSWORD;
- at every start, it upgrades the schema of its database forward (tables created when missing,
  its version recorded in cs_schema), as each new contact-center image does;
- GET :8035/actuator/health answers {"status":"UP"} once its database answers, else 503 DOWN
  (a build with HEALTH=fail never answers UP: it migrates, then stays DOWN);
- builds after 4b70d05 add the column cs_message.channel at start (a forward migration);
- POST :8035/api/messages stores a message in ONE transaction of two rows (cs_message and its
  cs_audit row) and then writes the upload /data/uploads/<id>.txt;
- GET :8035/api/stats counts rows; :8036 is the IM socket (accepts and closes).
"""
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
VERSION = open("/opt/cc/VERSION").read().strip()
BROKEN = open("/opt/cc/HEALTH").read().strip() == "fail"
url = os.environ.get("SPRING_DATASOURCE_URL", "jdbc:mysql://mysql:3306/cosinee")
m = re.match(r"jdbc:mysql://([^:/]+)(?::(\d+))?/(\w+)", url)
HOST, PORT, DB = m.group(1), m.group(2) or "3306", m.group(3)
USER = os.environ.get("SPRING_DATASOURCE_USERNAME", "root")
ENV = dict(os.environ, MYSQL_PWD=os.environ.get("SPRING_DATASOURCE_PASSWORD", ""))
UPLOADS = "/data/uploads"
lock = threading.Lock()


def sql(statements, db=DB):
    r = subprocess.run(
        ["mariadb", "-h", HOST, "-P", PORT, "-u", USER, "-N", "-B", db, "-e", statements],
        env=ENV, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return [line.split("\t") for line in r.stdout.splitlines()]


def upgrade_schema():
    sql("""
CREATE TABLE IF NOT EXISTS cs_schema (version VARCHAR(64) PRIMARY KEY, applied DATETIME NOT NULL) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS cs_message (id BIGINT AUTO_INCREMENT PRIMARY KEY, body VARCHAR(255) NOT NULL,
  created DATETIME(6) NOT NULL) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS cs_audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, message_id BIGINT NOT NULL,
  note VARCHAR(64) NOT NULL, UNIQUE KEY (message_id)) ENGINE=InnoDB;
INSERT IGNORE INTO cs_schema VALUES ('%s', NOW());
""" % VERSION)
    if VERSION != "4b70d05":
        # Every later build migrates forward, as the real app's upgrade scripts do; there is no
        # way back but the old data.
        cols = sql("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE()"
                   " AND table_name = 'cs_message' AND column_name = 'channel'")
        if cols[0][0] == "0":
            sql("ALTER TABLE cs_message ADD COLUMN channel VARCHAR(32) NOT NULL DEFAULT 'web'")


def db_up():
    try:
        sql("SELECT 1")
        return True
    except Exception:
        return False


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/actuator/health":
            if ready.is_set() and not BROKEN and db_up():
                self.answer(200, {"status": "UP"})
            else:
                self.answer(503, {"status": "DOWN"})
        elif self.path == "/api/stats":
            rows = sql("SELECT (SELECT COUNT(*) FROM cs_message), (SELECT COUNT(*) FROM cs_audit)")
            self.answer(200, {"messages": int(rows[0][0]), "audits": int(rows[0][1]),
                              "version": VERSION})
        elif self.path == "/api/version":
            self.answer(200, {"version": VERSION})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/api/messages" or not ready.is_set():
            self.answer(404 if ready.is_set() else 503, {"error": "not available"})
            return
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        body = "message %d %s" % (time.time_ns(), os.urandom(8).hex())
        try:
            with lock:
                rows = sql("START TRANSACTION;"
                           "INSERT INTO cs_message (body, created) VALUES ('%s', NOW(6));"
                           "SET @m = LAST_INSERT_ID();"
                           "INSERT INTO cs_audit (message_id, note) VALUES (@m, 'created');"
                           "COMMIT; SELECT @m;" % body)
            mid = rows[-1][0]
            os.makedirs(UPLOADS, exist_ok=True)
            with open(os.path.join(UPLOADS, mid + ".txt"), "w") as f:
                f.write(body + "\n")
            self.answer(200, {"id": int(mid)})
        except Exception as e:
            self.answer(500, {"error": str(e)})


def im_socket():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8036))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()


def start():
    while True:
        try:
            upgrade_schema()
            break
        except Exception as e:  # MySQL not up yet: the real app retries its pool too
            print("waiting for the database: %s" % e)
            time.sleep(1)
    ready.set()
    print("contact-center stand-in %s ready" % VERSION)


ready = threading.Event()
threading.Thread(target=im_socket, daemon=True).start()
threading.Thread(target=start, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8035), Handler).serve_forever()
