//! `coffer plugin list|inspect|new`: what plugins there are, what they ask for, and a skeleton
//! to write a new one.

use std::path::Path;

use anyhow::Result;
use coffer::plugins as plugin;
use coffer::ExitCode;
use coffer_runtime::{Origin, Plugin};

use super::{print_json, Global};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Built-in plugins and the plugins of the apps in coffer.toml
    List,
    /// Name, version, settings and every capability a plugin requests
    Inspect {
        /// A built-in plugin's name, an app of coffer.toml, or a path to a .wasm
        plugin: String,
    },
    /// Writes a working plugin skeleton into a new folder NAME, with coffer's WIT, that builds
    /// and passes `plugin inspect` as it is
    New {
        /// The plugin's name: lowercase letters, digits and '-'
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// The folder to create NAME in (default: the current one)
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// wit-bindgen, `cargo build --release --target wasm32-wasip2`
    Rust,
    /// componentize-py (`pip install componentize-py`)
    Python,
}

/// coffer's WIT, written into every skeleton: the plugin is built against exactly this host.
const WIT: &str = include_str!("../../../wit/world.wit");

/// The files of a new plugin, `{{name}}`, `{{crate}}` and `{{crate_file}}` to be filled in.
fn skeleton(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/plugin-rust/Cargo.toml.in"),
            ),
            (
                "src/lib.rs",
                include_str!("../../templates/plugin-rust/src/lib.rs"),
            ),
            ("wit/world.wit", WIT),
            (".gitignore", "target/\n"),
        ],
        Lang::Python => vec![
            (
                "app.py",
                include_str!("../../templates/plugin-python/app.py"),
            ),
            ("wit/world.wit", WIT),
            (".gitignore", "__pycache__/\n*.wasm\n"),
        ],
    }
}

fn new_plugin(g: &Global, name: &str, lang: Lang, dir: Option<&Path>) -> Result<ExitCode> {
    let valid = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    anyhow::ensure!(
        valid,
        "'{name}' cannot name a plugin: use lowercase letters, digits and '-', starting with a letter"
    );
    let root = dir.unwrap_or(Path::new(".")).join(name);
    anyhow::ensure!(
        !root.exists(),
        "{} already exists: choose another name or --dir",
        root.display()
    );
    let krate = format!("{name}-plugin");
    let krate_file = krate.replace('-', "_");
    let (build, wasm) = match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2".to_string(),
            format!("target/wasm32-wasip2/release/{krate_file}.wasm"),
        ),
        Lang::Python => (
            format!("componentize-py -d wit -w app componentize app -o {name}.wasm"),
            format!("{name}.wasm"),
        ),
    };
    let readme = format!(
        "# {name}: a coffer plugin\n\nMade by `coffer plugin new`. Build it and see what it asks for:\n\n```sh\n{build}\ncoffer plugin inspect {wasm}\n```\n\nThen pin it in coffer.toml (`plugin = \"/path/to/{wasm}\"`, `blake3 = \"<the hash inspect printed>\"`,\n`dir = \"/srv/{name}\"`) and run `coffer backup {name}`. `wit/world.wit` documents every host\nfunction; coffer's docs/PLUGINS.md walks through writing a plugin.\n"
    );
    let mut files: Vec<(&str, &str)> = skeleton(lang);
    files.push(("README.md", &readme));
    let mut written = vec![];
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("under the root"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{crate_file}}", &krate_file);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        written.push(rel.to_string());
    }
    if g.json {
        print_json(&serde_json::json!({
            "dir": root, "files": written, "build": build, "wasm": root.join(&wasm),
        }));
    } else {
        out!("created {} ({})", root.display(), written.join(", "));
        out!("build it:    cd {} && {build}", root.display());
        out!("inspect it:  coffer plugin inspect {wasm}");
    }
    Ok(ExitCode::Ok)
}

pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    let cache = g.cache_dir();
    match c {
        Command::List => {
            let mut rows = vec![];
            for name in plugin::builtin_names() {
                let (wasm, origin) = plugin::resolve_wasm(name, None)?;
                let p = Plugin::load(wasm, origin, Some(&cache))?;
                rows.push(serde_json::json!({
                    "name": p.info.name, "version": p.info.version, "source": "built-in",
                    "blake3": p.blake3, "description": p.info.description, "app": null,
                }));
            }
            if let Some(config) = g.config()? {
                for (app, a) in &config.apps {
                    rows.push(serde_json::json!({
                        "name": a.plugin, "source": if plugin::builtin_names().contains(&a.plugin.as_str()) { "built-in" } else { "file" },
                        "blake3": a.blake3, "app": app,
                    }));
                }
            }
            if g.json {
                print_json(&rows);
            } else {
                for r in rows {
                    match r["app"].as_str() {
                        None => out!(
                            "{:<12} {:<8} built-in  {}",
                            r["name"].as_str().unwrap_or(""),
                            r["version"].as_str().unwrap_or(""),
                            r["description"].as_str().unwrap_or("")
                        ),
                        Some(app) => out!(
                            "app {app:<8} uses {} ({})",
                            r["name"].as_str().unwrap_or(""),
                            r["source"].as_str().unwrap_or("")
                        ),
                    }
                }
            }
        }
        Command::New { name, lang, dir } => return new_plugin(g, name, *lang, dir.as_deref()),
        Command::Inspect { plugin: which } => {
            let app = g.config()?.and_then(|c| c.apps.get(which));
            let (wasm, origin) = if let Some(app) = app {
                plugin::resolve_wasm(&app.plugin, app.blake3.as_deref())?
            } else if plugin::builtin_names().contains(&which.as_str()) {
                plugin::resolve_wasm(which, None)?
            } else {
                // Inspecting an unpinned file is how one learns the hash to pin.
                let bytes =
                    std::fs::read(Path::new(which)).map_err(|e| anyhow::anyhow!("{which}: {e}"))?;
                (bytes, Origin::File(which.clone()))
            };
            let p = Plugin::load(wasm, origin, Some(&cache))?;
            // For an app: which requested capabilities its grants do not cover yet.
            let missing = match app {
                Some(a) => Some(coffer::ops::app::missing_grants(&p, which, a)?),
                None => None,
            };
            if g.json {
                let mut v = serde_json::to_value(&p.info)?;
                v["not_granted"] = serde_json::to_value(&missing)?;
                v["blake3"] = p.blake3.clone().into();
                v["origin"] = serde_json::to_value(&p.origin)?;
                v["size"] = p.wasm.len().into();
                print_json(&v);
            } else {
                let i = &p.info;
                out!("{} {} — {}", i.name, i.version, i.description);
                out!("  blake3   {}", p.blake3);
                out!(
                    "  size     {} bytes, built against coffer:plugin@{}",
                    p.wasm.len(),
                    i.wit
                );
                out!("  items    {}", i.items.join(", "));
                out!("  settings");
                for s in &i.settings {
                    out!(
                        "    {:<16} {}{}",
                        s.name,
                        s.description,
                        match (&s.default, s.required) {
                            (Some(d), _) => format!(" [default: {d:?}]"),
                            (None, true) => " [required]".into(),
                            _ => String::new(),
                        }
                    );
                }
                out!("  capabilities requested (grant them under [apps.NAME.grants])");
                if i.capabilities.is_empty() {
                    out!("    none beyond its app folder");
                }
                for (k, v) in &i.capabilities {
                    match (k.as_str(), v.split_once('/')) {
                        ("compose", Some((project, service))) => {
                            out!("    {k:<7} exec in service {service} of project {project}")
                        }
                        ("compose", None) => out!(
                            "    {k:<7} project {v}: ps, stop, down, up, its volumes (never a raw docker grant)"
                        ),
                        _ => out!("    {k:<7} {v}"),
                    }
                }
                if let Some(a) = app {
                    for (project, services) in &a.grants.compose {
                        out!(
                            "  app {which}: granted compose project {project}, exec in {}",
                            if services.is_empty() {
                                "no service".to_string()
                            } else {
                                services.join(", ")
                            }
                        );
                    }
                }
                out!("  always: read its app folder (capture), write it through restore-item (restore)");
                if let Some(m) = &missing {
                    if m.is_empty() {
                        out!("  app {which}: every requested capability is granted");
                    }
                    for (kind, value) in m {
                        match (kind.as_str(), value.split_once('/')) {
                            ("compose", Some((project, service))) => out!("  app {which}: NOT GRANTED exec in {service} of Compose project {project}: add it under [apps.{which}.grants.compose] as {project} = [\"{service}\"]"),
                            ("compose", None) => out!("  app {which}: NOT GRANTED Compose project {value}: add {value} = [] under [apps.{which}.grants.compose]"),
                            _ => out!("  app {which}: NOT GRANTED {kind} {value:?}: add it under [apps.{which}.grants] {kind}"),
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::Ok)
}
