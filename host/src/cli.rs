//! The command line: global options, opening the repository, output and progress.
//! One file per command under `cli/`.

/// `println!` that never panics: see [`out_line`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::out_line(format_args!($($t)*))
    };
}

/// `eprintln!` that never panics: a closed or full stderr loses the message, nothing more.
macro_rules! eout {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

mod backup;
mod check;
mod copy;
mod demo;
mod diff;
mod drill;
mod forget;
mod init;
mod key;
mod ls;
mod plugin;
mod prune;
mod repair;
mod restore;
mod serve;
mod snapshots;
mod stats;
mod upgrade;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use age::secrecy::SecretString;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use coffer::ExitCode;
use coffer_repo::keyfile::{self, Protector, Unlocker};
use coffer_repo::Repository;

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Back up and restore whole self-hosted applications",
    after_help = "Commands, environment and exit codes: docs/CLI.md. 中文说明（简体中文）：README.zh-CN.md"
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct Global {
    /// Repository: a folder or file:// URL [default: ~/.local/share/coffer/repo]
    #[arg(short, long, global = true, env = "COFFER_REPOSITORY")]
    pub repo: Option<String>,
    /// Read the passphrase from this file (first line). Also: COFFER_PASSWORD, or a prompt.
    #[arg(long, global = true, env = "COFFER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the repository with age or SSH identities instead of a passphrase
    #[arg(long, global = true, env = "COFFER_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Folder for local caches [default: ~/.cache/coffer]
    #[arg(long, global = true, env = "COFFER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// More log output on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// coffer.toml to read [default: ./coffer.toml, then ~/.config/coffer/coffer.toml]
    #[arg(long, global = true, env = "COFFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// scrypt work factor (log2 N) for new passphrase keys; the default takes about a second.
    /// Lower only for tests.
    #[arg(long, global = true, env = "COFFER_KDF_LOG_N", hide = true)]
    pub kdf_log_n: Option<u8>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(init::Args),
    /// Back up files and folders
    Backup(backup::Args),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// List the files of a snapshot
    Ls(ls::Args),
    /// Restore a snapshot (or part of it) into a folder
    Restore(restore::Args),
    /// Show what changed between two snapshots
    Diff(diff::Args),
    /// Copy snapshots into another repository, without re-chunking
    Copy(copy::Args),
    /// Remove snapshots a retention policy does not keep (per host and app)
    Forget(forget::Args),
    /// Delete data no snapshot needs: mark now, delete after a grace period (lock-free)
    Prune(prune::Args),
    /// Verify the repository's structure and, optionally, its data
    Check(check::Args),
    /// Repository size, deduplication and compression figures
    Stats(stats::Args),
    /// Repair the repository: `repair index` rebuilds the index from the packs
    #[command(subcommand)]
    Repair(repair::Command),
    /// Manage the keys that open the repository
    #[command(subcommand)]
    Key(key::Command),
    /// List and inspect plugins
    #[command(subcommand)]
    Plugin(plugin::Command),
    /// Rehearse restoring an app snapshot in scratch space and verify it, never touching the live app
    Drill(drill::Args),
    /// Upgrade an app with its plugin, rolling back by itself when it fails
    Upgrade(upgrade::Args),
    /// Run the daemon: schedules, a job API with live logs, metrics, a web page
    Serve(serve::Args),
    /// Back up and restore the bundled example app in a local demo repository, and verify it
    Demo(demo::Args),
    /// Print shell completions, e.g. `coffer completions bash > /etc/bash_completion.d/coffer`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `coffer man > /usr/local/share/man/man1/coffer.1`
    Man,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let g = &args.global;
    // An invalid coffer.toml stops every command that could read it, before anything is done:
    // skipping it would send `init` or `backup PATH` to the default repository.
    if !matches!(
        args.command,
        Command::Demo(_) | Command::Completions { .. } | Command::Man
    ) {
        g.config()?;
    }
    match &args.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Stats(a) => stats::run(g, a),
        Command::Repair(c) => repair::run(g, c),
        Command::Key(c) => key::run(g, c),
        Command::Plugin(c) => plugin::run(g, c),
        Command::Drill(a) => drill::run(g, a),
        Command::Upgrade(a) => upgrade::run(g, a),
        Command::Serve(a) => serve::run(g, a),
        Command::Demo(a) => demo::run(g, a),
        Command::Completions { shell } => {
            let mut buf = vec![];
            let mut cmd = <Args as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "coffer", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf).trim_end());
            Ok(ExitCode::Ok)
        }
        Command::Man => {
            let mut buf = vec![];
            clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).render(&mut buf)?;
            out!("{}", String::from_utf8_lossy(&buf).trim_end());
            Ok(ExitCode::Ok)
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

static CONFIG: std::sync::OnceLock<Option<coffer::config::Config>> = std::sync::OnceLock::new();

impl Global {
    /// coffer.toml, if there is one (read once).
    pub fn config(&self) -> Result<Option<&'static coffer::config::Config>> {
        if let Some(c) = CONFIG.get() {
            return Ok(c.as_ref());
        }
        let c = coffer::config::Config::discover(self.config.as_deref())?;
        Ok(CONFIG.get_or_init(|| c).as_ref())
    }

    /// `[repository]` of coffer.toml (empty without one). [`run`] has read and checked the file
    /// before any command runs, so an invalid one never gets here.
    pub fn repo_config(&self) -> coffer::config::RepositoryConfig {
        CONFIG
            .get()
            .and_then(Option::as_ref)
            .map(|c| c.repository.clone())
            .unwrap_or_default()
    }

    pub fn repo_location(&self) -> String {
        self.repo
            .clone()
            .or_else(|| self.repo_config().location)
            .unwrap_or_else(|| {
                let base = std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home().join(".local/share"));
                base.join("coffer/repo").display().to_string()
            })
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .or_else(|| self.repo_config().cache_dir)
            .unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home().join(".cache"))
                    .join("coffer")
            })
    }

    /// The passphrase from the file, the environment, or a no-echo prompt (asked twice when
    /// `confirm`, for a new one).
    pub fn passphrase(&self, confirm: bool) -> Result<SecretString> {
        if let Some(f) = &self.password_file {
            return read_password_file(f);
        }
        if std::env::var_os("COFFER_PASSWORD").is_none() {
            if let Some(f) = self.repo_config().password_file {
                return read_password_file(&f);
            }
        }
        if let Ok(p) = std::env::var("COFFER_PASSWORD") {
            return Ok(SecretString::from(p));
        }
        if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
            anyhow::bail!(
                "no passphrase: set COFFER_PASSWORD_FILE (or --password-file) or COFFER_PASSWORD, or run on a terminal"
            );
        }
        let p = rpassword::prompt_password("repository passphrase: ")
            .context("reading the passphrase")?;
        if confirm {
            let again = rpassword::prompt_password("again: ").context("reading the passphrase")?;
            anyhow::ensure!(p == again, "the passphrases differ");
            anyhow::ensure!(!p.is_empty(), "an empty passphrase protects nothing");
        }
        Ok(SecretString::from(p))
    }

    pub fn unlocker(&self) -> Result<Unlocker> {
        match self
            .identity_file
            .clone()
            .or_else(|| self.repo_config().identity_file)
            .as_ref()
        {
            Some(f) => Ok(Unlocker::Identities(keyfile::load_identities(f)?)),
            None => Ok(Unlocker::Passphrase(self.passphrase(false)?)),
        }
    }

    pub fn open(&self) -> Result<Repository> {
        let location = self.repo_location();
        let backend = coffer_store::open(&location, false, &self.repo_config().s3)
            .map_err(coffer_repo::Error::from)?;
        // Say "no repository" before asking for a passphrase it could not use.
        Repository::read_config(backend.as_ref())?;
        let mut repo = Repository::open(backend, &self.unlocker()?)?;
        repo.set_cache_dir(&self.cache_dir());
        let default = coffer_repo::crypto::DEFAULT_KDF_LOG_N;
        if let Some(n) = repo.key_kdf_log_n().filter(|n| *n > default) {
            eout!(
                "coffer: note: this key's passphrase takes {} MiB of memory to open (scrypt 2^{n}); `coffer key upgrade` re-seals it at {} MiB",
                coffer_repo::crypto::kdf_mib(n),
                coffer_repo::crypto::kdf_mib(default)
            );
        }
        Ok(repo)
    }

    /// How a new key is protected: recipients when given, else a passphrase. For `init` that is
    /// the repository passphrase (file, environment or prompt); for `key add` it comes only from
    /// `--new-password-file` or a prompt naming the key being made, never from the variables
    /// that opened the repository, which would silently give the new key the same passphrase.
    pub fn new_protector(
        &self,
        key: NewKey,
        recipients: &[String],
        recipients_file: &Option<PathBuf>,
        new_password_file: &Option<PathBuf>,
    ) -> Result<Protector> {
        let mut lines = recipients.to_vec();
        if let Some(f) = recipients_file {
            lines.extend(keyfile::read_recipients_file(f)?);
        }
        if !lines.is_empty() {
            return Ok(Protector::Recipients(keyfile::parse_recipients(lines)?));
        }
        let passphrase = match (new_password_file, key) {
            (Some(f), _) => read_password_file(f)?,
            (None, NewKey::Repository) => self.passphrase(true)?,
            (None, NewKey::Changed) => {
                anyhow::ensure!(
                    std::io::stdin().is_terminal() || std::io::stderr().is_terminal(),
                    "no new passphrase: give it with --new-password-file"
                );
                let p = rpassword::prompt_password("new passphrase for this key: ")
                    .context("reading the passphrase")?;
                let again = rpassword::prompt_password("the new passphrase again: ")
                    .context("reading the passphrase")?;
                anyhow::ensure!(p == again, "the passphrases differ");
                anyhow::ensure!(!p.is_empty(), "an empty passphrase protects nothing");
                SecretString::from(p)
            }
            (None, NewKey::Added { write_only }) => {
                let what = if write_only { "write-only" } else { "full" };
                anyhow::ensure!(
                    std::io::stdin().is_terminal() || std::io::stderr().is_terminal(),
                    "no passphrase for the new {what} key: give it with --new-password-file (COFFER_PASSWORD opens the repository; it is not the new key's)"
                );
                let p = rpassword::prompt_password(format!("passphrase for the new {what} key: "))
                    .context("reading the passphrase")?;
                let again =
                    rpassword::prompt_password(format!("the new {what} key's passphrase again: "))
                        .context("reading the passphrase")?;
                anyhow::ensure!(p == again, "the passphrases differ");
                anyhow::ensure!(!p.is_empty(), "an empty passphrase protects nothing");
                SecretString::from(p)
            }
        };
        Ok(Protector::Passphrase {
            passphrase,
            log_n: self.kdf_log_n,
        })
    }
}

/// The key [`Global::new_protector`] protects.
#[derive(Clone, Copy)]
pub enum NewKey {
    /// The first key, made by `init`.
    Repository,
    /// One more key, made by `key add`.
    Added { write_only: bool },
    /// The key in use, under a new passphrase (`key passwd`).
    Changed,
}

fn read_password_file(f: &Path) -> Result<SecretString> {
    let s = std::fs::read_to_string(f)
        .with_context(|| format!("reading passphrase file {}", f.display()))?;
    let line = s.lines().next().unwrap_or("").to_string();
    anyhow::ensure!(!line.is_empty(), "passphrase file {} is empty", f.display());
    Ok(SecretString::from(line))
}

/// Prints a value as JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Writes one line on stdout. A reader that went away (`coffer snapshots | head -1`) ends coffer
/// quietly; any other failure to write (a full disk) is one error line. Never a panic.
pub fn out_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(line).and_then(|_| o.write_all(b"\n")) {
        output_failed(e)
    }
}

/// Ends coffer after stdout failed: quietly when the reader closed the pipe, else with the cause.
pub fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0)
    }
    eout!("coffer: error: writing the output: {e}");
    std::process::exit(ExitCode::Failure as i32)
}

/// Flushes stdout at the end; see [`output_failed`].
pub fn flush_output() {
    use std::io::Write;
    if let Err(e) = std::io::stdout().flush() {
        output_failed(e)
    }
}

/// Progress on stderr while long work runs: a live bar on a terminal, a plain line every ten
/// seconds otherwise. Stops when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(label: &'static str, status: impl Fn() -> String + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}")
                        .unwrap(),
                );
                b.set_prefix(label);
                b
            });
            let mut ticks = 0u64;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                ticks += 1;
                match &bar {
                    Some(b) => {
                        b.set_message(status());
                        b.tick();
                    }
                    None if ticks % 100 == 0 => eout!("{label}: {}", status()),
                    None => {}
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the CLI shows an operation's events: log lines on stderr, prefixed with their source;
/// long phases as a progress line (see [`Progress`]). With `--json`, each event is one JSON
/// object per line on stderr instead (`{"event":"log","at","level","source","message"}`,
/// `{"event":"begin"|"end","at","phase"}`), for scripts following a long job; stdout keeps the
/// final report.
#[derive(Default)]
pub struct CliEvents {
    progress: std::sync::Mutex<Option<Progress>>,
    json: bool,
}

impl CliEvents {
    pub fn shared(json: bool) -> Arc<dyn coffer::ops::Events> {
        Arc::new(CliEvents {
            json,
            ..CliEvents::default()
        })
    }

    fn event(&self, mut v: serde_json::Value) {
        v["at"] = chrono::Utc::now().to_rfc3339().into();
        eout!("{v}");
    }
}

impl coffer::ops::Events for CliEvents {
    fn log(&self, level: coffer_runtime::LogLevel, source: &str, msg: &str) {
        use coffer_runtime::LogLevel;
        if self.json {
            if level != LogLevel::Debug {
                let level = match level {
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    _ => "error",
                };
                self.event(serde_json::json!({ "event": "log", "level": level, "source": source, "message": msg }));
            }
            return;
        }
        match level {
            LogLevel::Debug => tracing::debug!("{source}: {msg}"),
            LogLevel::Info => eout!("{source}: {msg}"),
            LogLevel::Warn => eout!("{source}: warning: {msg}"),
            LogLevel::Error => eout!("{source}: error: {msg}"),
        }
    }

    fn begin(&self, phase: &'static str, counters: Arc<coffer_repo::archiver::Counters>) {
        if self.json {
            self.event(serde_json::json!({ "event": "begin", "phase": phase }));
            return;
        }
        let p = Progress::start(phase, move || {
            format!(
                "{} read, {} added",
                human(counters.bytes_read.load(Ordering::Relaxed)),
                human(counters.bytes_added.load(Ordering::Relaxed))
            )
        });
        *self.progress.lock().unwrap() = Some(p);
    }

    fn end(&self, phase: &'static str) {
        if self.json {
            self.event(serde_json::json!({ "event": "end", "phase": phase }));
            return;
        }
        self.progress.lock().unwrap().take();
    }
}

/// Bytes as people read them.
pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
