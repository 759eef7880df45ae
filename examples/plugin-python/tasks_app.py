#!/usr/bin/env python3
"""Tasks: a tiny self-hosted app, the one examples/plugin-python's plugin backs up.

It keeps its tasks in a SQLite database (data/tasks.db, WAL mode) and files attached to them in
attachments/, and answers GET /health. Standard library only.

    tasks_app.py init DIR [--tasks N]       # lay out DIR with N tasks and an attachment each
    tasks_app.py serve DIR --port P         # GET /health, GET /tasks (JSON), POST /tasks (body: title)
    tasks_app.py add DIR TITLE              # add one task (with an attachment) directly
"""
import argparse
import http.server
import json
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
                                  created TEXT NOT NULL, attachment TEXT);
"""


def connect(d):
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    db = sqlite3.connect(os.path.join(d, "data", "tasks.db"), timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


def add(d, title):
    os.makedirs(os.path.join(d, "attachments"), exist_ok=True)
    db = connect(d)
    with db:
        cur = db.execute("INSERT INTO tasks(title, created) VALUES (?, ?)",
                         (title, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        name = f"task-{cur.lastrowid}.txt"
        with open(os.path.join(d, "attachments", name), "w") as f:
            f.write(f"notes for {title}\n" * 20)
        db.execute("UPDATE tasks SET attachment = ? WHERE id = ?", (name, cur.lastrowid))
    db.close()


class Handler(http.server.BaseHTTPRequestHandler):
    app_dir = "."

    def answer(self, status, body, kind="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            try:
                db = connect(self.app_dir)
                ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                db.close()
            except sqlite3.Error as e:
                return self.answer(503, json.dumps({"status": "down", "error": str(e)}))
            return self.answer(200 if ok else 503, json.dumps({"status": "ok" if ok else "down"}))
        if self.path == "/tasks":
            db = connect(self.app_dir)
            rows = db.execute("SELECT id, title, done FROM tasks ORDER BY id").fetchall()
            db.close()
            return self.answer(200, json.dumps([{"id": r[0], "title": r[1], "done": bool(r[2])} for r in rows]))
        self.answer(404, "{}")

    def do_POST(self):
        if self.path != "/tasks":
            return self.answer(404, "{}")
        n = int(self.headers.get("content-length", "0"))
        add(self.app_dir, self.rfile.read(n).decode() or "untitled")
        self.answer(201, "{}")

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("dir")
    i.add_argument("--tasks", type=int, default=20)
    s = sub.add_parser("serve")
    s.add_argument("dir")
    s.add_argument("--port", type=int, required=True)
    a = sub.add_parser("add")
    a.add_argument("dir")
    a.add_argument("title")
    args = p.parse_args()
    if args.cmd == "init":
        for n in range(args.tasks):
            add(args.dir, f"task {n}")
    elif args.cmd == "add":
        add(args.dir, args.title)
    else:
        Handler.app_dir = args.dir
        http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
