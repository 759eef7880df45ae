//! What a plugin declares about itself, and what it is given: settings and snapshots.

use crate::__private::bindings::coffer::plugin::types as wit;
use crate::{Error, Json, Result};

/// Something the plugin needs the user to grant in `[apps.NAME.grants]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Run a program (argv[0]).
    Run(String),
    /// HTTP to an origin, or `setting:NAME` for the origin in a setting.
    Http(String),
    /// An S3 endpoint.
    S3(String),
}

#[derive(Debug, Clone)]
pub struct SettingSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

/// What [`crate::Plugin::describe`] returns; build it with the chained methods.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub settings: Vec<SettingSpec>,
    pub capabilities: Vec<Capability>,
    pub items: Vec<String>,
}

impl PluginInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            settings: vec![],
            capabilities: vec![],
            items: vec![],
        }
    }

    /// A required setting.
    pub fn setting(mut self, name: &str, description: &str) -> Self {
        self.settings.push(SettingSpec { name: name.into(), description: description.into(), required: true, default: None });
        self
    }

    /// An optional setting with a default.
    pub fn setting_or(mut self, name: &str, description: &str, default: &str) -> Self {
        self.settings.push(SettingSpec {
            name: name.into(),
            description: description.into(),
            required: false,
            default: Some(default.into()),
        });
        self
    }

    pub fn runs(mut self, program: &str) -> Self {
        self.capabilities.push(Capability::Run(program.into()));
        self
    }

    /// Declares a Compose project it stops, starts and inspects (`setting:NAME` for a project
    /// named by a setting); the user grants it as `compose = { PROJECT = [] }`.
    pub fn compose(mut self, project: &str) -> Self {
        self.capabilities.push(Capability::Run(format!("compose:{project}")));
        self
    }

    /// Declares exec in `service` of a Compose project; granted as `compose = { PROJECT = [SERVICE] }`.
    pub fn compose_exec(mut self, project: &str, service: &str) -> Self {
        self.capabilities.push(Capability::Run(format!("compose:{project}/{service}")));
        self
    }

    pub fn http(mut self, origin: &str) -> Self {
        self.capabilities.push(Capability::Http(origin.into()));
        self
    }

    pub fn s3(mut self, endpoint: &str) -> Self {
        self.capabilities.push(Capability::S3(endpoint.into()));
        self
    }

    /// Declares that restore can run as a drill: with `coffer_drill` set, into a scratch folder,
    /// touching nothing of the live app ([`crate::host::run_setting`] then runs no stop or start
    /// command). `coffer drill` refuses plugins that do not declare it.
    pub fn drills(self) -> Self {
        self.setting_or("coffer_drill", "set by coffer during a drill (restore into scratch space, touch nothing live); not for coffer.toml", "false")
    }

    pub fn item(mut self, item: &str) -> Self {
        self.items.push(item.into());
        self
    }

    pub(crate) fn into_wit(self) -> wit::PluginInfo {
        wit::PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            settings: self
                .settings
                .into_iter()
                .map(|s| wit::SettingSpec { name: s.name, description: s.description, required: s.required, default_value: s.default })
                .collect(),
            capabilities: self
                .capabilities
                .into_iter()
                .map(|c| match c {
                    Capability::Run(p) => wit::Capability::Run(p),
                    Capability::Http(o) => wit::Capability::Http(o),
                    Capability::S3(e) => wit::Capability::S3(e),
                })
                .collect(),
            items: self.items,
        }
    }
}

/// The app's settings from coffer.toml, with the plugin's declared defaults filled in.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Settings { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A setting that must be present.
    pub fn require(&self, name: &str) -> Result<&str> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| Error(format!("setting `{name}` is required: add it under [apps.NAME.settings] in coffer.toml")))
    }

    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// A comma-separated list setting.
    /// Whether this call is part of a drill: a restore into scratch space that must touch
    /// nothing of the live app (see [`PluginInfo::drills`]).
    pub fn drill(&self) -> bool {
        self.get("coffer_drill") == Some("true")
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// A snapshot being restored or verified.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub time: String,
    pub hostname: String,
    /// What the plugin's capture returned.
    pub metadata: Json,
    pub items: Vec<String>,
}

impl Snapshot {
    pub(crate) fn from_wit(s: wit::SnapshotInfo) -> Result<Self> {
        Ok(Snapshot {
            id: s.id,
            time: s.time,
            hostname: s.hostname,
            metadata: serde_json::from_str(&s.metadata).map_err(|e| Error(format!("snapshot metadata: {e}")))?,
            items: s.items,
        })
    }

    /// Whether the snapshot holds this item (or items under it).
    pub fn has(&self, item: &str) -> bool {
        self.items.iter().any(|i| i == item || i.starts_with(&format!("{item}/")))
    }
}

/// One named check of verify or health.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Check { name: name.into(), ok: true, detail: detail.into() }
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Self {
        Check { name: name.into(), ok: false, detail: detail.into() }
    }

    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Check { name: name.into(), ok, detail: detail.into() }
    }
}
