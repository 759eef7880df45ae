"""A coffer plugin for {{name}}, made by `coffer plugin new --lang python`.

It captures the app's `data` folder (the `data_dir` setting) as the item `data`, restores it in
place and checks it is there. Make it yours: capture what your app needs to come back
(`host.sqlite_backup` for a SQLite database, `host.run_to_item` for a dump), record row counts
or versions in the metadata `capture` returns, and compare them in `verify`. Every host function
is documented in wit/world.wit; docs/PLUGINS.md in coffer has an example of each.

Build (pip install componentize-py):
    componentize-py -d wit -w app componentize app -o {{name}}.wasm
    coffer plugin inspect {{name}}.wasm
"""
import json
import os

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def setting(settings, name, default):
    for kv in settings:
        if kv.key == name:
            return kv.value
    return default


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            description="{{name}}: its data folder",
            settings=[
                types.SettingSpec(
                    name="data_dir",
                    description="the app's data folder, under the app folder",
                    required=False,
                    default_value="data",
                )
            ],
            # What the plugin asks to be granted in coffer.toml: programs it runs
            # (types.Capability_Run), HTTP origins (types.Capability_Http("setting:health_url")).
            capabilities=[],
            items=["data"],
        )

    def capture(self, settings) -> str:
        d = setting(settings, "data_dir", "data")
        size = host.capture_path("data", d)
        host.log(types.LogLevel.INFO, f"captured {d} ({size} bytes)")
        return json.dumps({"bytes": size})

    def restore(self, settings, snapshot, only) -> None:
        if not only or "data" in only:
            d = setting(settings, "data_dir", "data")
            aside = host.restore_item("data", d)
            if aside:
                host.log(types.LogLevel.INFO, f"the replaced {d} is kept as {aside}")

    def verify(self, settings, snapshot):
        # The plugin reads its app folder (read-only) at /app.
        d = setting(settings, "data_dir", "data")
        ok = os.path.isdir(os.path.join("/app", d))
        return [types.Check(name="data", ok=ok, detail=f"{d} is {'there' if ok else 'missing'}")]

    def health(self, settings):
        # An HTTP health check: host.http(host.HttpRequest(method="GET", url=..., headers=[],
        # body=b"", timeout_ms=5000)) with the origin declared in capabilities and granted.
        return []

    def upgrade(self, settings, to_version) -> None:
        raise Err("{{name}} has no upgrade step yet")
