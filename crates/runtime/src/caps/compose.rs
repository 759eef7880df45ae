//! Docker Compose projects: the least a plugin needs to capture and restore a Compose app, and
//! nothing more. Access to the Docker engine is root access, so a plugin never runs `docker`:
//! it names an operation on a project, and the host runs Compose (`docker compose` or
//! `docker-compose`, whichever the machine has) or the Docker CLI itself, with
//!
//! - the project's name, which must be granted (`compose = { NAME = [SERVICES] }` under
//!   `[apps.APP.grants]`), always passed with `-p`, never taken from the environment;
//! - the project's folder, under the app folder ([`Caps::resolve`]), as project directory;
//! - exec only in the services the grant lists, found by the project's and the service's labels;
//! - volumes only those the project made (its labels);
//! - a clean environment (PATH, HOME and the `DOCKER_*` connection variables), so a
//!   `COMPOSE_FILE` or a variable of the caller cannot change what the project means;
//! - before `up`, the project's resolved configuration checked to stay inside its folder: no
//!   bind mount from elsewhere (the Docker socket included), no privileged mode, no added
//!   capabilities or devices, no host pid, ipc or network namespace. Restoring files the plugin
//!   chose could otherwise rewrite the compose file into a root shell.

use std::path::{Component, Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::programs::run_with;
use super::{timeout_of, Caps, R};
use crate::bindings::wit_host::{
    Command, CommandOutput, ComposeCommand, ComposeProject, ComposeService,
};
use crate::process::Process;

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_STOP: Duration = Duration::from_secs(10);
const DEFAULT_EXEC: Duration = Duration::from_secs(600);
/// Docker CLI and Compose calls that only ask or change state (not exec, not up's wait).
const CLI_TIMEOUT: Duration = Duration::from_secs(300);

/// The labels Compose puts on what it creates.
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const VOLUME_LABEL: &str = "com.docker.compose.volume";

/// The Compose of this machine: `docker compose` (v2) when it answers, else `docker-compose`.
pub fn compose_tool() -> R<&'static [&'static str]> {
    static TOOL: OnceLock<Option<&'static [&'static str]>> = OnceLock::new();
    let works = |argv: &[&str]| {
        let mut c = Proc::new(argv[0]);
        c.args(&argv[1..]).arg("version");
        clean_env(&mut c);
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    TOOL.get_or_init(|| {
        if works(&["docker", "compose"]) {
            Some(&["docker", "compose"])
        } else if works(&["docker-compose"]) {
            Some(&["docker-compose"])
        } else {
            None
        }
    })
    .ok_or_else(|| {
        "neither `docker compose` nor `docker-compose` runs on this machine: install Docker with Compose".to_string()
    })
}

/// Only what reaches the engine: the rest of the caller's environment stays out.
fn clean_env(c: &mut Proc) {
    c.env_clear();
    for k in [
        "PATH",
        "HOME",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "DOCKER_CONTEXT",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
    ] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
}

fn docker(args: &[&str]) -> Proc {
    let mut c = Proc::new("docker");
    c.args(args);
    clean_env(&mut c);
    c
}

/// Runs a Docker or Compose command to its end; its stdout, or an error with its stderr.
fn output(mut c: Proc, what: &str, timeout: Duration) -> R<String> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let dog = super::programs::watchdog(child.id(), timeout);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    let _ = dog.send(());
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A project the grants allow, with its folder resolved.
pub(super) struct Project {
    name: String,
    dir: PathBuf,
}

impl Project {
    fn compose(&self, args: &[&str]) -> R<Proc> {
        let tool = compose_tool()?;
        let mut c = Proc::new(tool[0]);
        c.args(&tool[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("--project-directory")
            .arg(&self.dir)
            .args(args)
            .current_dir(&self.dir);
        clean_env(&mut c);
        Ok(c)
    }

    fn has_compose_file(&self) -> bool {
        [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yml",
            "docker-compose.yaml",
        ]
        .iter()
        .any(|f| self.dir.join(f).is_file())
    }

    /// The project's configuration as Compose resolves it (variables from `.env` filled in).
    fn config(&self) -> R<Value> {
        let text = output(
            self.compose(&["config"])?,
            &format!("compose config of project {}", self.name),
            CLI_TIMEOUT,
        )?;
        serde_yaml::from_str(&text)
            .map_err(|e| format!("compose config of project {}: {e}", self.name))
    }

    fn label_filter(&self) -> String {
        format!("label={PROJECT_LABEL}={}", self.name)
    }

    /// Ids of the project's containers (of one service when given; running ones only when asked).
    fn containers(&self, service: Option<&str>, running: bool) -> R<Vec<String>> {
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter"];
        let project = self.label_filter();
        args.push(&project);
        let svc = service.map(|s| format!("label={SERVICE_LABEL}={s}"));
        if let Some(s) = &svc {
            args.extend(["--filter", s]);
        }
        if running {
            args.extend(["--filter", "status=running"]);
        } else {
            args.push("-a");
        }
        let out = output(docker(&args), "docker ps", CLI_TIMEOUT)?;
        Ok(out.lines().map(str::to_string).collect())
    }
}

impl Caps {
    /// `p` if its name is granted and its folder lies under the app folder.
    pub(super) fn project(&self, p: &ComposeProject) -> R<Project> {
        let valid = !p.name.is_empty()
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && p.name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!(
                "'{}' is not a Compose project name (lowercase letters, digits, '-' and '_')",
                p.name
            ));
        }
        if !self.grants.compose.contains_key(&p.name) {
            let granted: Vec<&String> = self.grants.compose.keys().collect();
            return Err(format!(
                "it asked for the Compose project '{}', which is not granted: the grant `compose` under [apps.{}.grants] in coffer.toml names {}",
                p.name,
                self.app,
                if granted.is_empty() {
                    "no project".to_string()
                } else {
                    format!("only {granted:?}")
                }
            ));
        }
        Ok(Project {
            name: p.name.clone(),
            dir: self.resolve(&p.dir)?,
        })
    }

    fn exec_granted(&self, p: &Project, service: &str) -> R<()> {
        let services = &self.grants.compose[&p.name];
        if services.iter().any(|s| s == service) {
            return Ok(());
        }
        Err(format!(
            "it asked to exec in service '{service}' of Compose project '{}', which is not granted: the grant `compose` under [apps.{}.grants] in coffer.toml allows exec in {:?} of that project only ({} = [\"{service}\"] would allow it)",
            p.name, self.app, services, p.name
        ))
    }

    pub(super) fn compose_ps(&mut self, p: ComposeProject) -> R<Vec<ComposeService>> {
        let p = self.project(&p)?;
        let config = p.has_compose_file().then(|| p.config()).transpose()?;
        ps(&p, config.as_ref())
    }

    pub(super) fn compose_stop(
        &mut self,
        p: ComposeProject,
        services: Vec<String>,
        timeout_ms: u32,
    ) -> R<()> {
        let p = self.project(&p)?;
        let secs = timeout_of(timeout_ms, DEFAULT_STOP)
            .as_secs()
            .max(1)
            .to_string();
        let mut args = vec!["stop", "-t", &secs];
        args.extend(services.iter().map(String::as_str));
        output(
            p.compose(&args)?,
            &format!("compose stop of project {}", p.name),
            CLI_TIMEOUT,
        )
        .map(|_| ())
    }

    pub(super) fn compose_down(&mut self, p: ComposeProject, timeout_ms: u32) -> R<()> {
        let p = self.project(&p)?;
        let grace = timeout_of(timeout_ms, DEFAULT_STOP).as_secs().max(1);
        if p.has_compose_file() {
            let secs = grace.to_string();
            return output(
                p.compose(&["down", "-t", &secs])?,
                &format!("compose down of project {}", p.name),
                CLI_TIMEOUT,
            )
            .map(|_| ());
        }
        // The folder is gone (a disaster): what `down` does, from the project's labels.
        let ids = p.containers(None, false)?;
        if !ids.is_empty() {
            let secs = grace.to_string();
            let mut stop = vec!["stop", "-t", &secs];
            stop.extend(ids.iter().map(String::as_str));
            output(docker(&stop), "docker stop", CLI_TIMEOUT)?;
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.iter().map(String::as_str));
            output(docker(&rm), "docker rm", CLI_TIMEOUT)?;
        }
        let filter = p.label_filter();
        let nets = output(
            docker(&["network", "ls", "-q", "--filter", &filter]),
            "docker network ls",
            CLI_TIMEOUT,
        )?;
        for net in nets.lines() {
            output(
                docker(&["network", "rm", net]),
                "docker network rm",
                CLI_TIMEOUT,
            )?;
        }
        Ok(())
    }

    pub(super) fn compose_up(
        &mut self,
        p: ComposeProject,
        services: Vec<String>,
        wait_ms: u32,
    ) -> R<Vec<ComposeService>> {
        let p = self.project(&p)?;
        // Read once: the wait below asks `ps` every half second.
        let config = p.config()?;
        contained(&p, &config)?;
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(services.iter().map(String::as_str));
        output(
            p.compose(&args)?,
            &format!("compose up of project {}", p.name),
            CLI_TIMEOUT,
        )?;
        let deadline = Instant::now() + timeout_of(wait_ms, DEFAULT_WAIT);
        loop {
            let all = ps(&p, Some(&config))?;
            let wanted: Vec<&ComposeService> = all
                .iter()
                .filter(|s| services.is_empty() || services.contains(&s.name))
                .collect();
            if let Some(dead) = wanted
                .iter()
                .find(|s| matches!(s.state.as_str(), "exited" | "dead"))
            {
                return Err(format!(
                    "service {} of project {} {} after `up`{}",
                    dead.name,
                    p.name,
                    dead.state,
                    last_logs(&p, &dead.name)
                ));
            }
            let waiting: Vec<String> = wanted
                .iter()
                .filter(|s| {
                    s.state != "running" || !matches!(s.health.as_str(), "healthy" | "none")
                })
                .map(|s| format!("{} ({}, health {})", s.name, s.state, s.health))
                .collect();
            if waiting.is_empty() {
                return Ok(all);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "project {} is not up after {} s: {}",
                    p.name,
                    timeout_of(wait_ms, DEFAULT_WAIT).as_secs(),
                    waiting.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The `docker exec` of a granted service's running container, and the command as
    /// [`run_with`] reports it. Env values reach the container through the Docker CLI's own
    /// environment (`-e NAME`), never on a command line another user could read.
    fn exec(&self, cmd: &ComposeCommand, stdin: bool) -> R<(Proc, Command)> {
        let p = self.project(&cmd.project)?;
        self.exec_granted(&p, &cmd.service)?;
        if cmd.args.is_empty() {
            return Err("compose exec needs a command".into());
        }
        let id = p
            .containers(Some(&cmd.service), true)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                format!(
                    "service {} of project {} is not running: start it (compose-up) before exec",
                    cmd.service, p.name
                )
            })?;
        let mut c = docker(&["exec"]);
        if stdin {
            c.arg("-i");
        }
        for kv in &cmd.env {
            if kv.key.is_empty() || kv.key.contains('=') {
                return Err(format!("'{}' is not an environment variable name", kv.key));
            }
            c.arg("-e").arg(&kv.key).env(&kv.key, &kv.value);
        }
        c.arg(&id).args(&cmd.args);
        let shown = Command {
            program: format!("{} (in {}/{})", cmd.args[0], p.name, cmd.service),
            args: vec![],
            env: vec![],
            cwd: None,
            timeout_ms: timeout_of(cmd.timeout_ms, DEFAULT_EXEC).as_millis() as u32,
        };
        Ok((c, shown))
    }

    pub(super) fn compose_exec(&mut self, cmd: ComposeCommand) -> R<CommandOutput> {
        let (c, shown) = self.exec(&cmd, false)?;
        run_with(c, &shown, None, None)
    }

    pub(super) fn compose_exec_to_item(
        &mut self,
        cmd: ComposeCommand,
        item: String,
    ) -> R<CommandOutput> {
        let (c, shown) = self.exec(&cmd, false)?;
        let session = self.session()?;
        let mut drain = |r: &mut dyn std::io::Read| {
            session
                .add_reader(Path::new(&item), r)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        run_with(c, &shown, None, Some(&mut drain))
    }

    pub(super) fn compose_exec_from_item(
        &mut self,
        cmd: ComposeCommand,
        item: String,
    ) -> R<CommandOutput> {
        let (c, shown) = self.exec(&cmd, true)?;
        let reader = self.item_reader(&item)?;
        run_with(c, &shown, Some(Box::new(reader)), None)
    }

    pub(super) fn compose_spawn(&mut self, cmd: ComposeCommand) -> R<Process> {
        let (c, shown) = self.exec(&cmd, true)?;
        Process::spawn(c, &shown.program, timeout_of(cmd.timeout_ms, DEFAULT_EXEC))
    }

    pub(super) fn compose_capture_volume(
        &mut self,
        p: ComposeProject,
        volume: String,
        item: String,
    ) -> R<u64> {
        let p = self.project(&p)?;
        let name = project_volume(&p, &volume)?.ok_or_else(|| {
            format!(
                "project {} has no volume '{volume}' (none carries its labels: start the project once, or check the name in its compose file)",
                p.name
            )
        })?;
        let mount = mountpoint(&name)?;
        self.session()?
            .add_path(Path::new(&item), &mount)
            .map_err(|e| format!("volume {name}: {e}"))
    }

    pub(super) fn compose_restore_volume(
        &mut self,
        p: ComposeProject,
        volume: String,
        item: String,
    ) -> R<()> {
        let p = self.project(&p)?;
        let name = match project_volume(&p, &volume)? {
            Some(n) => {
                let users = output(
                    docker(&["ps", "-q", "--filter", &format!("volume={n}")]),
                    "docker ps",
                    CLI_TIMEOUT,
                )?;
                if !users.trim().is_empty() {
                    return Err(format!(
                        "volume {n} of project {} is in use by a running container: stop the project (compose-down) before restoring it",
                        p.name
                    ));
                }
                n
            }
            None => create_volume(&p, &volume)?,
        };
        let mount = mountpoint(&name)?;
        let parent = mount
            .parent()
            .ok_or("a volume's mount point has no parent")?;
        let (_staging, staged) = self.stage(&item, parent)?;
        if !std::fs::symlink_metadata(&staged).is_ok_and(|m| m.is_dir()) {
            return Err(format!("item {item} is not a folder, so not a volume"));
        }
        // The volume's content is replaced: the old one goes once the new one is in place.
        let old = parent.join(format!(".coffer-old-{}", std::process::id()));
        std::fs::rename(&mount, &old).map_err(|e| format!("{}: {e}", mount.display()))?;
        if let Err(e) = std::fs::rename(&staged, &mount) {
            let _ = std::fs::rename(&old, &mount);
            return Err(format!("putting volume {name} in place: {e}"));
        }
        std::fs::remove_dir_all(&old).map_err(|e| format!("{}: {e}", old.display()))
    }
}

/// What `ps` tells of every service of the project (those of its configuration, when it has a
/// compose file, in its order, then any other the engine has containers of).
fn ps(p: &Project, config: Option<&Value>) -> R<Vec<ComposeService>> {
    let mut names: Vec<String> = vec![];
    let mut images: Vec<(String, String)> = vec![];
    if let Some(config) = config {
        if let Some(services) = config.get("services").and_then(Value::as_mapping) {
            for (k, v) in services {
                let name = k.as_str().unwrap_or_default().to_string();
                let image = v
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                images.push((name.clone(), image));
                names.push(name);
            }
        }
    }
    let ids = p.containers(None, false)?;
    let mut containers: Vec<serde_json::Value> = vec![];
    if !ids.is_empty() {
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        let text = output(docker(&args), "docker inspect", CLI_TIMEOUT)?;
        containers = serde_json::from_str(&text).map_err(|e| format!("docker inspect: {e}"))?;
    }
    let service_of = |c: &serde_json::Value| {
        c["Config"]["Labels"][SERVICE_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for c in &containers {
        let s = service_of(c);
        if !names.contains(&s) {
            names.push(s);
        }
    }
    let mut out = vec![];
    for name in names {
        // A running container first, when a service has several.
        let c = containers
            .iter()
            .filter(|c| service_of(c) == name)
            .max_by_key(|c| c["State"]["Running"].as_bool() == Some(true));
        let image = images
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| i.clone());
        out.push(match c {
            None => ComposeService {
                name,
                state: "absent".into(),
                health: "none".into(),
                image: image.unwrap_or_default(),
                image_id: String::new(),
                repo_digests: vec![],
            },
            Some(c) => {
                let image_id = c["Image"].as_str().unwrap_or_default().to_string();
                ComposeService {
                    name,
                    state: c["State"]["Status"].as_str().unwrap_or("unknown").into(),
                    health: c["State"]["Health"]["Status"]
                        .as_str()
                        .unwrap_or("none")
                        .into(),
                    image: image.unwrap_or_else(|| {
                        c["Config"]["Image"].as_str().unwrap_or_default().into()
                    }),
                    repo_digests: repo_digests(&image_id)?,
                    image_id,
                }
            }
        });
    }
    Ok(out)
}

fn repo_digests(image_id: &str) -> R<Vec<String>> {
    if image_id.is_empty() {
        return Ok(vec![]);
    }
    let text = output(
        docker(&["image", "inspect", "-f", "{{json .RepoDigests}}", image_id]),
        "docker image inspect",
        CLI_TIMEOUT,
    )
    .unwrap_or_else(|_| "[]".into()); // the image was removed under a container
    Ok(serde_json::from_str(text.trim()).unwrap_or_default())
}

/// The last lines a service's container logged, to say why it stopped.
fn last_logs(p: &Project, service: &str) -> String {
    let Ok(ids) = p.containers(Some(service), false) else {
        return String::new();
    };
    let Some(id) = ids.first() else {
        return String::new();
    };
    let mut c = docker(&["logs", "--tail", "8", id]);
    c.stderr(Stdio::piped()).stdout(Stdio::piped());
    match c.output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                String::new()
            } else {
                format!("; its last log lines: {}", lines.join(" / "))
            }
        }
        Err(_) => String::new(),
    }
}

/// The engine's name of the project's volume `key`: the one carrying both labels. Compose v2
/// labels a volume with its key in the compose file; Compose 1.x with its name when the file
/// gives one (`name: ssalgten-backend-data`), so that is looked for next.
fn project_volume(p: &Project, key: &str) -> R<Option<String>> {
    let by_label = |value: &str| -> R<Option<String>> {
        let out = output(
            docker(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &p.label_filter(),
                "--filter",
                &format!("label={VOLUME_LABEL}={value}"),
            ]),
            "docker volume ls",
            CLI_TIMEOUT,
        )?;
        Ok(out.lines().next().map(str::to_string))
    };
    if let Some(v) = by_label(key)? {
        return Ok(Some(v));
    }
    if !p.has_compose_file() {
        return Ok(None);
    }
    let config = p.config()?;
    match volume_name(&config, key) {
        Some(name) => by_label(&name),
        None => Ok(None),
    }
}

/// The name a compose file gives volume `key` (`volumes: {key: {name: …}}`).
fn volume_name(config: &Value, key: &str) -> Option<String> {
    config
        .get("volumes")?
        .get(key)?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// Creates the project's volume `key` as Compose would (its name from the compose file, the
/// project's labels), for a restore after the volume was lost.
fn create_volume(p: &Project, key: &str) -> R<String> {
    let config = p.config()?;
    let Some(spec) = config.get("volumes").and_then(|v| v.get(key)) else {
        return Err(format!(
            "project {} has no volume '{key}' in its compose file",
            p.name
        ));
    };
    if spec.get("external").and_then(Value::as_bool) == Some(true) {
        return Err(format!(
            "volume '{key}' of project {} is external: it is not the project's to restore",
            p.name
        ));
    }
    let name = volume_name(&config, key).unwrap_or_else(|| format!("{}_{key}", p.name));
    output(
        docker(&[
            "volume",
            "create",
            "--label",
            &format!("{PROJECT_LABEL}={}", p.name),
            "--label",
            &format!("{VOLUME_LABEL}={key}"),
            &name,
        ]),
        "docker volume create",
        CLI_TIMEOUT,
    )?;
    Ok(name)
}

fn mountpoint(volume: &str) -> R<PathBuf> {
    let out = output(
        docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume]),
        "docker volume inspect",
        CLI_TIMEOUT,
    )?;
    let path = PathBuf::from(out.trim());
    std::fs::read_dir(&path).map_err(|e| {
        format!(
            "volume {volume} lives at {}, which coffer cannot read ({e}): run coffer as root, or as a user who may read Docker's volumes",
            path.display()
        )
    })?;
    Ok(path)
}

/// Refuses a project whose configuration reaches outside its folder (see the module's doc).
fn contained(p: &Project, config: &Value) -> R<()> {
    let refuse = |service: &str, what: String| {
        Err(format!(
            "project {} gives service {service} {what}: a `compose` grant covers the project's own folder and volumes only, so coffer does not start it; change its compose file in {}, or start it yourself",
            p.name,
            p.dir.display()
        ))
    };
    let inside = |src: &str| {
        let path = Path::new(src);
        let mut norm = PathBuf::new();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    norm.pop();
                }
                Component::CurDir => {}
                c => norm.push(c),
            }
        }
        let real = norm.canonicalize().unwrap_or(norm);
        real.starts_with(&p.dir)
    };
    let empty = serde_yaml::Mapping::new();
    let services = config
        .get("services")
        .and_then(Value::as_mapping)
        .unwrap_or(&empty);
    for (name, s) in services {
        let name = name.as_str().unwrap_or("?");
        if s.get("privileged").and_then(Value::as_bool) == Some(true) {
            return refuse(name, "privileged mode".into());
        }
        for ns in ["pid", "ipc", "network_mode", "userns_mode", "uts"] {
            if let Some(v) = s.get(ns).and_then(Value::as_str) {
                if v == "host" {
                    return refuse(name, format!("the host's {ns} namespace"));
                }
            }
        }
        for key in ["cap_add", "devices", "security_opt"] {
            if s.get(key)
                .and_then(Value::as_sequence)
                .is_some_and(|v| !v.is_empty())
            {
                return refuse(name, format!("`{key}`"));
            }
        }
        for v in s
            .get("volumes")
            .and_then(Value::as_sequence)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let source = match v {
                // Short form, as docker-compose v1 prints it: SOURCE:TARGET[:MODE].
                Value::String(text) => {
                    let src = text.split(':').next().unwrap_or_default();
                    src.starts_with('/').then(|| src.to_string())
                }
                // Long form, as Compose v2 prints it.
                Value::Mapping(_) => {
                    (v.get("type").and_then(Value::as_str) == Some("bind")).then(|| {
                        v.get("source")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    })
                }
                _ => None,
            };
            if let Some(src) = source {
                if !inside(&src) {
                    return refuse(
                        name,
                        format!("the host path {src} (a bind mount outside its folder)"),
                    );
                }
            }
        }
    }
    if let Some(volumes) = config.get("volumes").and_then(Value::as_mapping) {
        for (key, spec) in volumes {
            let device = spec
                .get("driver_opts")
                .and_then(|o| o.get("device"))
                .and_then(Value::as_str);
            if let Some(dev) = device {
                if !inside(dev) {
                    return refuse(
                        key.as_str().unwrap_or("?"),
                        format!("the host path {dev} (a volume bound outside its folder)"),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project {
            name: "app".into(),
            dir: PathBuf::from("/srv/app"),
        }
    }

    fn check(yaml: &str) -> R<()> {
        contained(&project(), &serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn binds_inside_the_folder_and_named_volumes_pass_in_both_forms() {
        // docker-compose v1 prints the short form with absolute sources.
        check("services:\n  db:\n    volumes:\n    - /srv/app/data:/var/lib/mysql:rw\n    - pgdata:/data\n")
            .unwrap();
        // Compose v2 prints the long form.
        check("services:\n  db:\n    volumes:\n    - type: bind\n      source: /srv/app/data\n      target: /x\n    - type: volume\n      source: pgdata\n      target: /y\n")
            .unwrap();
    }

    #[test]
    fn anything_reaching_outside_the_folder_is_refused() {
        for (yaml, says) in [
            ("services:\n  x:\n    volumes:\n    - /:/host:rw\n", "the host path /"),
            ("services:\n  x:\n    volumes:\n    - /srv/app/../other:/o\n", "/srv/app/../other"),
            ("services:\n  x:\n    volumes:\n    - /var/run/docker.sock:/var/run/docker.sock\n", "docker.sock"),
            ("services:\n  x:\n    volumes:\n    - type: bind\n      source: /etc\n      target: /etc\n", "/etc"),
            ("services:\n  x:\n    privileged: true\n", "privileged"),
            ("services:\n  x:\n    pid: host\n", "pid namespace"),
            ("services:\n  x:\n    network_mode: host\n", "network_mode"),
            ("services:\n  x:\n    cap_add: [SYS_ADMIN]\n", "cap_add"),
            ("services:\n  x:\n    devices: [/dev/sda:/dev/sda]\n", "devices"),
            ("volumes:\n  v:\n    driver_opts:\n      type: none\n      o: bind\n      device: /root\n", "/root"),
        ] {
            let err = check(yaml).unwrap_err();
            assert!(err.contains(says), "{yaml}: {err}");
            assert!(err.contains("`compose` grant"), "{err}");
        }
    }
}
