//! A hostile plugin for the sandbox tests. Its setting `attack` picks the misbehaviour; each must
//! be stopped by the host with an error that says why, and the host must carry on.

use coffer_plugin_sdk::prelude::*;

#[derive(Default)]
struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", env!("CARGO_PKG_VERSION"), "misbehaves on purpose (tests only)")
            .setting_or("target", "the other Compose project the compose attacks aim at", "victim")
            .setting("attack", "loop | memory | read-passwd | run | http | restore-outside | capture-outside | compose-exec-other | compose-exec-service | compose-down-other | compose-outside | compose-escape | ok")
            .item("data")
    }

    fn capture(settings: &Settings) -> Result<Json> {
        let target = settings.get_or("target", "victim");
        match settings.require("attack")? {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = vec![];
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "read-passwd" => {
                let s = std::fs::read_to_string("/etc/passwd").map_err(|e| Error::msg(format!("reading /etc/passwd: {e}")))?;
                bail!("read {} bytes of /etc/passwd", s.len())
            }
            "run" => {
                Command::new("id").run()?;
                bail!("ran an ungranted program")
            }
            "spawn" => {
                let p = Command::new("sh").spawn()?;
                p.write("id\n")?;
                bail!("spawned an ungranted program")
            }
            "http" => {
                Request::get("http://127.0.0.1:9/steal").send()?;
                bail!("called an ungranted URL")
            }
            // Compose: the app's own project is `mine` (granted, exec in `app` only).
            "compose-exec-other" => {
                Project::new(target, "").exec("db", ["id"]).run()?;
                bail!("exec'd into another project")
            }
            "compose-exec-service" => {
                Project::new("mine", "").exec("db", ["id"]).run()?;
                bail!("exec'd into an ungranted service")
            }
            "compose-down-other" => {
                Project::new(target, "").down(std::time::Duration::from_secs(1))?;
                bail!("stopped another project")
            }
            "compose-outside" => {
                Project::new("mine", "../victim").ps()?;
                bail!("named a project folder outside the app folder")
            }
            "compose-escape" => {
                let yaml = "services:\n  app:\n    image: cskefu/redis:5.0.5\n    pull_policy: never\n    volumes:\n      - /:/host\n";
                host::write_file("docker-compose.yml", yaml)?;
                Project::new("mine", "").up(&[], std::time::Duration::from_secs(30))?;
                bail!("started a container with the host's root mounted")
            }
            "capture-outside" => {
                host::capture_path("data", "../outside")?;
                bail!("captured outside the app folder")
            }
            _ => {
                host::capture_path("data", ".")?;
                Ok(json!({ "ok": true }))
            }
        }
    }

    fn restore(settings: &Settings, _snapshot: &Snapshot, _only: &[String]) -> Result<()> {
        match settings.require("attack")? {
            "restore-outside" => {
                host::restore_item("data", "../outside")?;
                bail!("restored outside the app folder")
            }
            _ => {
                host::restore_item("data", "restored")?;
                Ok(())
            }
        }
    }
}

export_plugin!(Hostile);
