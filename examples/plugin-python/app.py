"""A coffer plugin in Python for Tasks (tasks_app.py): its SQLite database and its attachments.

Built with componentize-py against coffer's WIT world (wit/world.wit, world `app`):

    componentize-py -d ../../wit -w app componentize app -o tasks.wasm

The class `WitWorld` implements the world's exports; `wit_world.imports.host` holds the host's
functions (each raises `Err(message)` when the host refuses or fails). Like a Rust plugin, this one
never touches the bytes: it names what the host captures and restores. It can read its app folder
(read-only) at /app.
"""
import json
import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

DEFAULT_HEALTH_URL = "http://127.0.0.1:8080/health"


def setting(settings, name, default=None):
    for kv in settings:
        if kv.key == name:
            return kv.value
    return default


def count_tasks(db):
    rows = host.sqlite_query(db, "SELECT count(*), coalesce(max(id), 0) FROM tasks")
    return int(rows[0][0]), int(rows[0][1])


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="tasks",
            version="0.1.0",
            description="Tasks (examples/plugin-python): its SQLite database and attachments; a plugin written in Python",
            settings=[
                types.SettingSpec(
                    name="health_url",
                    description="the app's health endpoint",
                    required=False,
                    default_value=DEFAULT_HEALTH_URL,
                )
            ],
            capabilities=[types.Capability_Http("setting:health_url")],
            items=["db", "attachments"],
        )

    def capture(self, settings) -> str:
        # A consistent copy of the live database (SQLite's backup API, one read transaction),
        # then the attachments folder.
        size = host.sqlite_backup("db/tasks.db", "data/tasks.db")
        host.capture_path("attachments", "attachments")
        tasks, last_id = count_tasks(host.DbSource_Item("db/tasks.db"))
        attachments = sorted(os.listdir("/app/attachments")) if os.path.isdir("/app/attachments") else []
        host.log(types.LogLevel.INFO, f"captured {tasks} tasks ({size} bytes) and {len(attachments)} attachments")
        return json.dumps({"tasks": tasks, "last_id": last_id, "attachments": len(attachments)})

    def restore(self, settings, snapshot, only) -> None:
        wanted = only or ["db", "attachments"]
        if "db" in wanted:
            # The database is swapped in whole; a log of the replaced one must not replay over it.
            for stale in ("data/tasks.db-wal", "data/tasks.db-shm"):
                host.remove_file(stale)
            aside = host.restore_item("db/tasks.db", "data/tasks.db")
            if aside:
                host.log(types.LogLevel.INFO, f"the replaced database is kept as {aside}")
        if "attachments" in wanted:
            aside = host.restore_item("attachments", "attachments")
            if aside:
                host.log(types.LogLevel.INFO, f"the replaced attachments are kept as {aside}")

    def verify(self, settings, snapshot):
        checks = []
        db = host.DbSource_Path("data/tasks.db")
        integrity = host.sqlite_query(db, "PRAGMA integrity_check")[0][0]
        checks.append(types.Check(name="integrity", ok=integrity == "ok", detail=f"integrity_check: {integrity}"))
        tasks, _ = count_tasks(db)
        if snapshot is not None:
            meta = json.loads(snapshot.metadata or "{}")
            want = int(meta.get("tasks", 0))
            at_least = meta.get("coffer_verify") == "at_least"
            ok = tasks >= want if at_least else tasks == want
            checks.append(types.Check(name="tasks", ok=ok, detail=f"{tasks} tasks, the snapshot has {want}"))
        missing = [
            name
            for (name,) in host.sqlite_query(db, "SELECT attachment FROM tasks WHERE attachment IS NOT NULL")
            if not os.path.exists(os.path.join("/app/attachments", name))
        ]
        checks.append(
            types.Check(
                name="attachments",
                ok=not missing,
                detail="every task's attachment is there" if not missing else f"missing: {', '.join(missing[:5])}",
            )
        )
        return checks

    def health(self, settings):
        url = setting(settings, "health_url", DEFAULT_HEALTH_URL)
        try:
            r = host.http(host.HttpRequest(method="GET", url=url, headers=[], body=b"", timeout_ms=5000))
        except Err as e:
            return [types.Check(name="web", ok=False, detail=f"{url}: {e.value}")]
        return [types.Check(name="web", ok=r.status == 200, detail=f"{url} answered {r.status}")]

    def upgrade(self, settings, to_version) -> None:
        raise Err("Tasks has no upgrade step")
