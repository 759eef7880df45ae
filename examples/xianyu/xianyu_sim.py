#!/usr/bin/env python3
"""A stand-in for xianyu-auto-reply (闲鱼自动回复), for trying coffer's xianyu plugin.

It lays out the app's folder as the real app does (seeds/003): data/xianyu_data.db and
data/user_stats.db (SQLite, WAL mode), global_config.yml, static/uploads/images/. It can then
act as the running app: write to the database continuously, serve GET /health, start and stop.

    xianyu_sim.py generate DIR [--users N] [--messages N] [--images N]
    xianyu_sim.py write DIR --seconds S        # live writer: transactions of two rows sharing a txn id
    xianyu_sim.py serve DIR --port P           # /health answers 200 while both databases pass integrity_check
    xianyu_sim.py start DIR --port P           # serve in the background (pid in DIR/run/xianyu.pid)
    xianyu_sim.py stop DIR
    xianyu_sim.py upgrade DIR --to V --port P  # stop, migrate the database forward, set app_version, start;
                                               # a version containing "broken" starts unhealthy,
                                               # one containing "slow" answers 503 for its first 4 s

Only the Python standard library is used (sqlite3 is real SQLite).
"""
import argparse
import http.server
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

SCHEMA = {
    "xianyu_data.db": """
        CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL,
            password_hash TEXT NOT NULL, email TEXT, created_at TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS cookies (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
            value TEXT NOT NULL, auto_confirm INTEGER DEFAULT 1, updated_at TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS keywords (id INTEGER PRIMARY KEY, cookie_id TEXT NOT NULL REFERENCES cookies(id),
            keyword TEXT NOT NULL, reply TEXT NOT NULL, item_id TEXT);
        CREATE TABLE IF NOT EXISTS cards (id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
            content TEXT, user_id INTEGER NOT NULL REFERENCES users(id));
        CREATE TABLE IF NOT EXISTS item_info (id INTEGER PRIMARY KEY, cookie_id TEXT NOT NULL, item_id TEXT NOT NULL,
            title TEXT, price TEXT, detail TEXT, updated_at TEXT);
        CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, txn INTEGER NOT NULL,
            cookie_id TEXT NOT NULL, chat_id TEXT NOT NULL, direction TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS messages_txn ON messages(txn);
    """,
    "user_stats.db": """
        CREATE TABLE IF NOT EXISTS user_stats (id INTEGER PRIMARY KEY, anonymous_id TEXT UNIQUE NOT NULL,
            first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, os TEXT, version TEXT);
        CREATE TABLE IF NOT EXISTS daily_stats (day TEXT PRIMARY KEY, active_users INTEGER NOT NULL, messages INTEGER NOT NULL);
    """,
}

WORDS = "在吗 还在 包邮 多少钱 可以便宜 发货 什么时候 成色 有货 谢谢 好的 拍了 hello price shipping thanks".split()


def connect(path):
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA foreign_keys=ON")
    return c


def now(rng=None):
    t = time.time() - (rng.randint(0, 86400 * 90) if rng else 0)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def generate(a):
    rng = random.Random(3)
    os.makedirs(os.path.join(a.dir, "data"), exist_ok=True)
    for name, schema in SCHEMA.items():
        c = connect(os.path.join(a.dir, "data", name))
        c.executescript(schema)
    db = connect(os.path.join(a.dir, "data", "xianyu_data.db"))
    db.execute("BEGIN")
    for u in range(1, a.users + 1):
        db.execute("INSERT INTO users VALUES (?,?,?,?,?)", (u, f"seller{u}", f"{rng.getrandbits(128):032x}", f"seller{u}@example.com", now(rng)))
        for k in range(3):
            cid = f"cookie-{u}-{k}"
            db.execute("INSERT INTO cookies VALUES (?,?,?,?,?)", (cid, u, f"unb={rng.getrandbits(64):x}; cookie2={rng.getrandbits(128):x}", 1, now(rng)))
            for w in range(5):
                db.execute("INSERT INTO keywords(cookie_id, keyword, reply, item_id) VALUES (?,?,?,?)", (cid, rng.choice(WORDS), "亲，在的，" + " ".join(rng.choice(WORDS) for _ in range(6)), str(rng.randint(10**11, 10**12))))
            for i in range(4):
                db.execute("INSERT INTO item_info(cookie_id, item_id, title, price, detail, updated_at) VALUES (?,?,?,?,?,?)", (cid, str(rng.randint(10**11, 10**12)), "闲置 " + rng.choice(WORDS), f"{rng.randint(5, 3000)}.00", " ".join(rng.choice(WORDS) for _ in range(40)), now(rng)))
        db.execute("INSERT INTO cards(name, type, content, user_id) VALUES (?,?,?,?)", (f"card{u}", "text", "卡密 " + f"{rng.getrandbits(64):x}", u))
    for m in range(a.messages):
        db.execute("INSERT INTO messages(txn, cookie_id, chat_id, direction, body, created_at) VALUES (?,?,?,?,?,?)", (-1 - m // 2, f"cookie-{rng.randint(1, a.users)}-0", f"chat{rng.randint(1, 5000)}", rng.choice(["in", "out"]), " ".join(rng.choice(WORDS) for _ in range(10)), now(rng)))
    db.execute("COMMIT")
    st = connect(os.path.join(a.dir, "data", "user_stats.db"))
    st.execute("BEGIN")
    for i in range(a.users * 20):
        st.execute("INSERT INTO user_stats(anonymous_id, first_seen, last_seen, os, version) VALUES (?,?,?,?,?)", (f"{rng.getrandbits(128):032x}", now(rng), now(rng), rng.choice(["linux", "windows", "macos"]), "1.0." + str(rng.randint(0, 9))))
    for d in range(90):
        st.execute("INSERT INTO daily_stats VALUES (?,?,?)", (f"2026-{1 + d // 30:02}-{1 + d % 28:02}-{d}", rng.randint(10, 500), rng.randint(100, 9000)))
    st.execute("COMMIT")
    with open(os.path.join(a.dir, "global_config.yml"), "w") as f:
        f.write("# xianyu-auto-reply global configuration\nAUTO_REPLY:\n  enabled: true\n  default_message: '亲，稍等，马上回复'\nMANUAL_MODE:\n  timeout: 3600\nWEBSOCKET_URL: wss://wss-goofish.dingtalk.com/\nHEARTBEAT_INTERVAL: 15\nLOG_CONFIG:\n  level: INFO\napp_version: 1.0\n")
    img = os.path.join(a.dir, "static", "uploads", "images")
    os.makedirs(img, exist_ok=True)
    for i in range(a.images):
        with open(os.path.join(img, f"{rng.getrandbits(64):016x}.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(20_000, 200_000)))
    print(f"generated xianyu folder {a.dir}: {a.users} users, {a.messages} messages, {a.images} images")


def write(a):
    """Commits transactions of two rows sharing one txn id until the time is up."""
    db = connect(os.path.join(a.dir, "data", "xianyu_data.db"))
    stats = connect(os.path.join(a.dir, "data", "user_stats.db"))
    end = time.time() + a.seconds
    txn = int(time.time() * 1000) * 1000
    n = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while time.time() < end and not stop:
        txn += 1
        db.execute("BEGIN IMMEDIATE")
        for direction in ("in", "out"):
            db.execute("INSERT INTO messages(txn, cookie_id, chat_id, direction, body, created_at) VALUES (?,?,?,?,?,?)", (txn, "cookie-1-0", f"chat{txn % 97}", direction, f"live message {txn} " + "x" * (txn % 200), now()))
        db.execute("COMMIT")
        if txn % 50 == 0:
            stats.execute("INSERT INTO user_stats(anonymous_id, first_seen, last_seen) VALUES (?,?,?)", (f"live-{txn}", now(), now()))
        n += 1
    print(n, flush=True)


class Health(http.server.BaseHTTPRequestHandler):
    app_dir = "."
    started = time.monotonic()

    def do_GET(self):
        if self.path != "/health":
            self.send_response(404)
            self.end_headers()
            return
        problems = []
        version = app_version(self.app_dir)
        if "broken" in version:
            problems.append(f"version {version} fails its self-check")
        if "slow" in version and time.monotonic() - Health.started < 4:
            body = b"starting"
            self.send_response(503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        for name in SCHEMA:
            try:
                c = sqlite3.connect(os.path.join(self.app_dir, "data", name), timeout=5)
                r = c.execute("PRAGMA integrity_check").fetchone()[0]
                if r != "ok":
                    problems.append(f"{name}: {r}")
            except Exception as e:  # noqa: BLE001 - report any failure as unhealthy
                problems.append(f"{name}: {e}")
        body = ("unhealthy: " + "; ".join(problems) if problems else "ok").encode()
        self.send_response(500 if problems else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def app_version(d):
    try:
        for line in open(os.path.join(d, "global_config.yml")):
            if line.startswith("app_version:"):
                return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return ""


def upgrade(a):
    """What an update script does: stop, migrate the schema forward, record the version, start."""
    stop(a)
    db = connect(os.path.join(a.dir, "data", "xianyu_data.db"))
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS app_migrations(version TEXT PRIMARY KEY, applied TEXT)")
        db.execute("INSERT OR IGNORE INTO app_migrations VALUES (?, ?)", (a.to, now()))
    db.close()
    path = os.path.join(a.dir, "global_config.yml")
    lines = [l for l in open(path) if not l.startswith("app_version:")]
    lines.append(f"app_version: {a.to}\n")
    with open(path + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)
    start(a)


def serve(a):
    Health.app_dir = a.dir
    Health.started = time.monotonic()
    http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Health).serve_forever()


def pidfile(d):
    return os.path.join(d, "run", "xianyu.pid")


def start(a):
    os.makedirs(os.path.join(a.dir, "run"), exist_ok=True)
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", a.dir, "--port", str(a.port)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile(a.dir), "w") as f:
        f.write(str(p.pid))
    import urllib.error
    import urllib.request
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{a.port}/health", timeout=1)
            print(f"started (pid {p.pid})")
            return
        except urllib.error.HTTPError as e:
            print(f"started (pid {p.pid}), not healthy yet: {e.code}")
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    print("started, but /health does not answer yet", file=sys.stderr)


def stop(a):
    try:
        pid = int(open(pidfile(a.dir)).read())
    except FileNotFoundError:
        print("not running")
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    except ProcessLookupError:
        pass
    # Another stop may have run at the same time (one left behind by a killed restore).
    try:
        os.remove(pidfile(a.dir))
    except FileNotFoundError:
        pass
    print("stopped")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dir")
    g.add_argument("--users", type=int, default=50)
    g.add_argument("--messages", type=int, default=20000)
    g.add_argument("--images", type=int, default=20)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("--seconds", type=float, default=10)
    for name in ("serve", "start"):
        s = sub.add_parser(name)
        s.add_argument("dir")
        s.add_argument("--port", type=int, default=8080)
    s = sub.add_parser("stop")
    s.add_argument("dir")
    u = sub.add_parser("upgrade")
    u.add_argument("dir")
    u.add_argument("--to", required=True)
    u.add_argument("--port", type=int, default=8080)
    a = p.parse_args()
    a.dir = os.path.abspath(a.dir)
    {"generate": generate, "write": write, "serve": serve, "start": start, "stop": stop, "upgrade": upgrade}[a.cmd](a)


if __name__ == "__main__":
    main()
