//! PostgreSQL for plugins: a dump read at one exported snapshot, with row counts and checksums
//! taken at that same snapshot, and a restore into an empty (or fresh) database. The client
//! programs (psql, pg_dump, pg_restore) run on the host as granted programs, or inside the
//! database's Compose service ([`Via`]). Used by zhiyun and SsalgTen.

use std::time::Duration;

use crate::compose::{Exec, Project};
use crate::host::{self, Command, Process};
use crate::{bail, json, serde_json, Error, Json, JsonMap, Result, Settings};

/// Marks the end of one answer on the psql session's output.
const END: &str = "__coffer_end__";
/// Separates columns (psql -F): a byte no table name or number holds.
const SEP: &str = "\u{1f}";
/// The session settings every count and checksum runs under, so a restore on a server with
/// another time zone or float setting computes the same checksums.
const STABLE: &str = "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex';";
const LONG: Duration = Duration::from_secs(6 * 3600);

/// Where the client programs (psql, pg_dump, pg_restore) run: on this host as granted
/// programs, or inside the database's Compose service, as zhiyun's manual does it
/// (`docker-compose exec db pg_dump`), through the host's Compose capability.
#[derive(Clone)]
pub enum Via {
    Host,
    Service(Project, String),
}

/// A client command, wherever it runs.
pub struct Client {
    via: Via,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Client {
    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    fn args<S: Into<String>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn on_host(&self) -> Command {
        let mut c = Command::new(&self.args[0]).args(self.args[1..].iter().cloned()).timeout(LONG);
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    fn in_service(&self, p: &Project, service: &str) -> Exec {
        let mut c = p.exec(service, self.args.iter().cloned()).timeout(LONG);
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    fn run(&self) -> Result<host::Output> {
        match &self.via {
            Via::Host => self.on_host().run(),
            Via::Service(p, s) => self.in_service(p, s).run(),
        }
    }

    fn run_to_item(&self, item: &str) -> Result<host::Output> {
        match &self.via {
            Via::Host => self.on_host().run_to_item(item),
            Via::Service(p, s) => self.in_service(p, s).run_to_item(item),
        }
    }

    fn run_from_item(&self, item: &str) -> Result<host::Output> {
        match &self.via {
            Via::Host => self.on_host().run_from_item(item),
            Via::Service(p, s) => self.in_service(p, s).run_from_item(item),
        }
    }

    fn spawn(&self) -> Result<Process> {
        match &self.via {
            Via::Host => self.on_host().spawn(),
            Via::Service(p, s) => self.in_service(p, s).spawn(),
        }
    }
}

/// Where and how to reach the database.
#[derive(Clone)]
pub struct Pg {
    pub via: Via,
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub maintenance_db: String,
}

/// The dump's form in the snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain SQL (`-Fp`), restored with psql.
    Plain,
    /// Custom archive without compression (`-Fc -Z0`), restored with pg_restore.
    Custom,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "plain" => Ok(Format::Plain),
            "custom" => Ok(Format::Custom),
            other => bail!("setting `dump_format` is `{other}`: use `plain` or `custom`"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Custom => "custom",
        }
    }

    pub fn item(self, db: &str) -> String {
        match self {
            Format::Plain => format!("db/{db}.sql"),
            Format::Custom => format!("db/{db}.dump"),
        }
    }
}

/// `"name"` quoted as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` quoted as an SQL literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Pg {
    /// From the settings `db_compose_project`, `db_compose_dir`, `db_compose_service` (run
    /// inside that service when a project is set), `db_host`, `db_port`, `db_user`,
    /// `db_password`, `db_name` and `db_maintenance`; `defaults` gives (user, database, service)
    /// when they are not set.
    pub fn from(settings: &Settings, defaults: (&str, &str, &str)) -> Result<Pg> {
        let project = settings.get_or("db_compose_project", "").trim();
        let via = if project.is_empty() {
            Via::Host
        } else {
            Via::Service(
                Project::new(project, settings.get_or("db_compose_dir", "")),
                settings.get_or("db_compose_service", defaults.2).to_string(),
            )
        };
        Ok(Pg {
            via,
            host: settings.get_or("db_host", "127.0.0.1").to_string(),
            port: settings.get_or("db_port", "5432").to_string(),
            user: settings.get_or("db_user", defaults.0).to_string(),
            password: settings.get_or("db_password", "").to_string(),
            database: settings.get_or("db_name", defaults.1).to_string(),
            maintenance_db: settings.get_or("db_maintenance", "postgres").to_string(),
        })
    }

    pub fn at(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// A client program with the connection in its arguments and the password in PGPASSWORD
    /// (never on a command line, where `ps` would show it).
    fn command(&self, program: &str, db: &str) -> Client {
        let mut c = Client { via: self.via.clone(), args: vec![program.to_string()], env: vec![] }
            .args(["-h", &self.host, "-p", &self.port, "-U", &self.user])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "coffer");
        if !self.password.is_empty() {
            c = c.env("PGPASSWORD", &self.password);
        }
        c.args(["-d", db])
    }

    fn psql(&self, db: &str) -> Client {
        self.command("psql", db)
            .args(["-X", "-q", "-A", "-t", "-F", SEP, "-v", "ON_ERROR_STOP=1"])
    }

    /// Runs statements on `db` in one psql call; the rows of every result, in order.
    pub fn query(&self, db: &str, sql: &str) -> Result<Vec<Vec<String>>> {
        let out = self.psql(db).args(["-c", sql]).run()?;
        if !out.success() {
            bail!("{}", self.failure(db, &out.stderr));
        }
        Ok(rows(&out.stdout_text()))
    }

    /// A psql error as one line that says where.
    fn failure(&self, db: &str, stderr: &[u8]) -> String {
        let text = String::from_utf8_lossy(stderr);
        let msg = text
            .trim()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let hint = if msg.contains("password authentication failed") {
            " (check `db_password` in coffer.toml)"
        } else if msg.contains("Connection refused") || msg.contains("could not connect") {
            " (is PostgreSQL running there? check `db_host` and `db_port`)"
        } else {
            ""
        };
        format!("PostgreSQL {} database {db}: {msg}{hint}", self.at())
    }

    /// Opens a session on the database holding a read-only repeatable-read transaction whose
    /// snapshot it exports.
    fn snapshot_session(&self) -> Result<(Session<'_>, String)> {
        let s = Session {
            p: self.psql(&self.database).spawn()?,
            pg: self,
            db: self.database.clone(),
        };
        let exported = s.ask(&format!("{STABLE} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();"))?;
        let id = exported
            .first()
            .and_then(|r| r.first())
            .cloned()
            .ok_or_else(|| Error::msg("pg_export_snapshot returned nothing"))?;
        Ok((s, id))
    }

    /// Captures the database: pg_dump reads the snapshot a psql session exported, and that
    /// session then counts and checksums every table at the same instant. Returns the facts.
    pub fn capture(&self, format: Format) -> Result<Json> {
        let (session, snapshot) = self.snapshot_session()?;
        // The transaction's snapshot as txids: which transactions the dump sees (for matching
        // it against logs or a WAL archive).
        let facts =
            session.ask("SELECT current_setting('server_version'), txid_current_snapshot();")?;
        let (version, xids) = match facts.first().map(|r| r.as_slice()) {
            Some([v, x]) => (v.clone(), x.clone()),
            _ => bail!("PostgreSQL did not report its version and snapshot"),
        };
        let item = format.item(&self.database);
        let mut dump = self.command("pg_dump", &self.database).args([
            "--no-owner",
            "--no-privileges",
            "--snapshot",
            &snapshot,
        ]);
        dump = match format {
            Format::Plain => dump.arg("-Fp"),
            Format::Custom => dump.args(["-Fc", "-Z0"]),
        };
        host::info(format!(
            "dumping database {} ({}) at snapshot {snapshot}",
            self.database,
            format.name()
        ));
        let out = dump.run_to_item(&item)?;
        if !out.success() {
            bail!("pg_dump of {}", self.failure(&self.database, &out.stderr));
        }
        let tables = session.table_facts()?;
        session.close()?;
        host::info(format!(
            "dumped {} tables of {}",
            tables.len(),
            self.database
        ));
        Ok(json!({
            "server_version": version,
            "database": self.database,
            "format": format.name(),
            "item": item,
            "snapshot": snapshot,
            "xid_snapshot": xids,
            "tables": tables,
        }))
    }

    /// Every table's rows and checksum as the database is now (one transaction).
    pub fn facts_now(&self) -> Result<JsonMap<String, Json>> {
        let s = Session {
            p: self.psql(&self.database).spawn()?,
            pg: self,
            db: self.database.clone(),
        };
        s.ask(&format!(
            "{STABLE} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
        ))?;
        let facts = s.table_facts()?;
        s.close()?;
        Ok(facts)
    }

    pub fn database_exists(&self) -> Result<bool> {
        let r = self.query(
            &self.maintenance_db,
            &format!(
                "SELECT 1 FROM pg_database WHERE datname = {}",
                literal(&self.database)
            ),
        )?;
        Ok(!r.is_empty())
    }

    /// How many tables, views, sequences… the database holds outside the system schemas.
    pub fn relations(&self) -> Result<u64> {
        let r = self.query(
            &self.database,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
        )?;
        Ok(r.first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Restores the dump `item` into the database: created when missing, refused when it holds
    /// anything unless `replace` (then the old one is renamed aside, never dropped). The load
    /// is one transaction; on failure a database this call created is dropped again and one it
    /// renamed aside gets its name back.
    pub fn restore(&self, item: &str, format: Format, replace: bool) -> Result<()> {
        let db = &self.database;
        let exists = self.database_exists()?;
        let mut aside = None;
        if exists {
            let n = self.relations()?;
            if n > 0 {
                if !replace {
                    bail!(
                        "database {db} at {} is not empty ({n} tables, sequences or other relations): coffer does not restore over data. \
                         Restore into an empty or missing database, or run the restore with `--set replace_database=true` to rename the current one aside",
                        self.at()
                    );
                }
                let name = format!("{db}_replaced_{}", stamp());
                self.query(&self.maintenance_db, &format!("ALTER DATABASE {} RENAME TO {}", ident(db), ident(&name)))
                    .map_err(|e| Error(format!("{e} (stop the app first: the database must have no other sessions to be renamed aside)")))?;
                host::info(format!("the current database {db} is kept as {name}"));
                aside = Some(name);
            }
        }
        // Missing, or just renamed aside: a fresh one is made.
        let created = !exists || aside.is_some();
        if created {
            self.query(
                &self.maintenance_db,
                &format!("CREATE DATABASE {}", ident(db)),
            )?;
            host::info(format!("created database {db}"));
        }
        let load = match format {
            Format::Plain => self
                .psql(db)
                .args(["--single-transaction", "-o", "/dev/null"]),
            Format::Custom => self.command("pg_restore", db).args([
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
            ]),
        };
        let out = load.run_from_item(item)?;
        if out.success() {
            return Ok(());
        }
        let err = self.failure(db, &out.stderr);
        let mut undo = vec![];
        if created {
            match self.query(
                &self.maintenance_db,
                &format!("DROP DATABASE {}", ident(db)),
            ) {
                Ok(_) => undo.push(format!("dropped the database {db} it had created")),
                Err(e) => undo.push(format!(
                    "could not drop the database {db} it had created: {e}"
                )),
            }
        }
        if let Some(name) = aside {
            match self.query(
                &self.maintenance_db,
                &format!("ALTER DATABASE {} RENAME TO {}", ident(&name), ident(db)),
            ) {
                Ok(_) => undo.push(format!("gave {name} its name {db} back")),
                Err(e) => undo.push(format!("could not rename {name} back to {db}: {e}")),
            }
        }
        bail!(
            "loading the dump failed and nothing of it was kept ({}): {err}",
            undo.join("; ")
        )
    }
}

/// The file a drill's restore leaves in the scratch folder, naming its scratch database.
pub const DRILL_MARKER: &str = ".coffer-drill.json";

impl Pg {
    /// A drill's load: the dump `item` into a scratch database `<database>_drill_<UTC time>` on
    /// the same server, never the live one (scratch databases an earlier drill left, killed
    /// before its verify, are dropped first). Its name goes into [`DRILL_MARKER`] in the scratch
    /// folder, where the drill's verify finds it ([`Pg::drill_scratch`]).
    pub fn drill_load(&self, item: &str, format: Format) -> Result<()> {
        let prefix = format!("{}_drill_", self.database);
        let stale = self.query(
            &self.maintenance_db,
            &format!("SELECT datname FROM pg_database WHERE starts_with(datname, {})", literal(&prefix)),
        )?;
        let mut scratch = self.clone();
        for r in stale {
            if let Some(old) = r.first() {
                host::info(format!("dropping the scratch database {old} an earlier drill left"));
                scratch.database = old.clone();
                self.drop_scratch(&scratch)?;
            }
        }
        scratch.database = format!("{prefix}{}", stamp());
        host::info(format!("drill: loading the dump into the scratch database {}", scratch.database));
        host::write_file(DRILL_MARKER, json!({ "database": scratch.database }).to_string())?;
        scratch.restore(item, format, false)
    }

    /// The scratch database the drill's restore loaded, from [`DRILL_MARKER`].
    pub fn drill_scratch(&self) -> Result<Pg> {
        let text = std::fs::read(format!("/app/{DRILL_MARKER}"))
            .map_err(|e| Error(format!("the drill's restore left no {DRILL_MARKER}: {e}")))?;
        let marker: Json = serde_json::from_slice(&text)?;
        let mut scratch = self.clone();
        scratch.database = marker["database"].as_str().unwrap_or_default().to_string();
        if !scratch.database.starts_with(&format!("{}_drill_", self.database)) {
            bail!("{DRILL_MARKER} names {}, not a scratch database of {}", scratch.database, self.database);
        }
        Ok(scratch)
    }

    /// Drops a drill's scratch database (sessions on it are ended).
    pub fn drop_scratch(&self, scratch: &Pg) -> Result<()> {
        if !scratch.database.starts_with(&format!("{}_drill_", self.database)) {
            bail!("refusing to drop {}: not a scratch database", scratch.database);
        }
        self.query(&self.maintenance_db, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&scratch.database)))?;
        Ok(())
    }
}

/// A psql process kept open: one transaction, answered statement by statement.
struct Session<'a> {
    p: Process,
    pg: &'a Pg,
    db: String,
}

impl Session<'_> {
    /// Sends statements; the rows they printed.
    fn ask(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        self.p.write(format!("{sql}\n\\echo {END}\n"))?;
        let mut out = String::new();
        loop {
            match self.p.read_line(LONG)? {
                Some(l) if l == END => return Ok(rows(&out)),
                Some(l) => {
                    out.push_str(&l);
                    out.push('\n');
                }
                None => bail!("{}", self.pg.failure(&self.db, &self.stderr())),
            }
        }
    }

    /// psql has ended: what it said on stderr.
    fn stderr(&self) -> Vec<u8> {
        self.p
            .finish()
            .map(|o| o.stderr)
            .unwrap_or_else(|e| e.0.into_bytes())
    }

    /// Each table's rows and checksum, in the session's transaction.
    fn table_facts(&self) -> Result<JsonMap<String, Json>> {
        let tables = self.ask(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;",
        )?;
        let mut facts = JsonMap::new();
        if tables.is_empty() {
            return Ok(facts);
        }
        let sql = tables
            .iter()
            .map(|t| facts_sql(&t[0]))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for r in self.ask(&format!("{sql};"))? {
            if r.len() == 3 {
                facts.insert(
                    r[0].clone(),
                    json!({ "rows": r[1].parse::<u64>().unwrap_or(0), "checksum": r[2] }),
                );
            }
        }
        Ok(facts)
    }

    fn close(self) -> Result<()> {
        self.p.write("COMMIT;\n")?;
        let out = self.p.finish()?;
        if !out.success() {
            bail!("{}", self.pg.failure(&self.db, &out.stderr));
        }
        Ok(())
    }
}

/// Rows and an order-independent checksum of table `t` (already quoted): the sum of a 60-bit
/// slice of each row's md5, so memory stays flat however big the table.
fn facts_sql(t: &str) -> String {
    format!(
        "SELECT {name}, count(*), coalesce(sum(('x' || substr(md5(r::text), 1, 15))::bit(60)::bigint::numeric), 0) FROM {t} r",
        name = literal(t)
    )
}

fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(SEP).map(String::from).collect())
        .collect()
}

/// A UTC timestamp for names, from the WASI clock.
pub fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
