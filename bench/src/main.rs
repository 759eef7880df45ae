//! coffer-bench: coffer, restic and (when installed) borg side by side on the same generated,
//! app-like dataset.
//!
//! `cargo run --release -p coffer-bench [-- --size-mib 1024 --dir /tmp/coffer-bench]`
//!
//! Generates ~1 GiB (a plain-SQL dump, a paged database file, incompressible images, many small
//! files), then for each tool: first backup, next-day backup (shifting SQL edits, rewritten pages,
//! new and changed files), no-change backup, listing the snapshots (the cost of unlocking), a check
//! that reads all data, and restores of the last snapshot interleaved between the tools (A B C A B
//! C, on disk and on tmpfs). Every step runs in a fresh child so its CPU time and peak RSS are its
//! own. Prints seconds, CPU seconds, peak RSS, repository sizes and the ratios to restic, and says
//! which of issue 14's targets are met. It is a program, not a
//! test: figures vary with the machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const WORDS: [&str; 16] = [
    "hello",
    "order",
    "refund",
    "thanks",
    "shipping",
    "price",
    "when",
    "available",
    "colour",
    "size",
    "customer",
    "delivery",
    "address",
    "invoice",
    "support",
    "ticket",
];

fn sql_rows(out: &mut Vec<u8>, rng: &mut Rng, ids: std::ops::Range<u64>, tag: &str) {
    for i in ids {
        let x = rng.next();
        let body: Vec<&str> = (0..12)
            .map(|k| WORDS[((x >> (k * 4)) & 15) as usize])
            .collect();
        writeln!(out, "INSERT INTO messages VALUES ({i}, 'customer-{}', '{tag}{}', '2026-{:02}-{:02} {:02}:{:02}:{:02}', {});",
            x % 40_000, body.join(" "), 1 + x % 12, 1 + (x >> 8) % 28, (x >> 16) % 24, (x >> 24) % 60, (x >> 32) % 60, (x >> 40) % 1000).unwrap();
    }
}

/// Day 1 or day 2 of the dataset. Day 2 = day 1 with the edits an app makes in a day.
fn generate(root: &Path, size_mib: u64, day: u32) -> Result<()> {
    let scale = size_mib as f64 / 1024.0;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    std::fs::create_dir_all(root.join("db"))?;
    // 1. SQL dump, ~40 %: rows inserted in five places and appended on day 2.
    let rows = (3_200_000.0 * scale) as u64;
    let mut dump = Vec::with_capacity((rows * 140) as usize);
    dump.extend_from_slice(b"-- PostgreSQL database dump\nCREATE TABLE messages (id bigint, customer text, body text, created timestamp, score int);\n");
    let step = rows / 5;
    for part in 0..5u64 {
        sql_rows(&mut dump, &mut rng, part * step..(part + 1) * step, "");
        if day == 2 {
            let mut r2 = Rng(77 + part);
            sql_rows(
                &mut dump,
                &mut r2,
                50_000_000 + part * 1000..50_000_000 + part * 1000 + 1000,
                "new ",
            );
        }
    }
    if day == 2 {
        let mut r2 = Rng(99);
        sql_rows(&mut dump, &mut r2, 60_000_000..60_005_000, "late ");
    }
    std::fs::write(root.join("db/dump.sql"), &dump)?;
    drop(dump);
    // 2. A paged database file, ~20 %: 8 KiB pages of half-random records; day 2 rewrites 500
    //    pages in place and appends 1000.
    let pages = (25_600.0 * scale) as u64;
    let mut db = vec![0u8; (pages * 8192) as usize];
    for (p, page) in db.chunks_mut(8192).enumerate() {
        page[..16].copy_from_slice(format!("PAGE{:012}", p).as_bytes());
        rng.fill(&mut page[16..4096]);
        for (i, b) in page[4096..].iter_mut().enumerate() {
            *b = b"record-field-value;"[i % 19];
        }
    }
    // Page 0 starts with SQLite's header (magic, page size 8192 at offset 16), as a real
    // database file does; the rest is the generator's.
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&8192u16.to_be_bytes());
    db[18..100].fill(1);
    if day == 2 {
        let mut r2 = Rng(5);
        for _ in 0..500 {
            let p = (1 + r2.next() % (pages - 1)) as usize;
            r2.fill(&mut db[p * 8192 + 16..p * 8192 + 4096]);
        }
        let mut extra = vec![0u8; 1000 * 8192];
        r2.fill(&mut extra);
        db.extend_from_slice(&extra);
    }
    std::fs::write(root.join("db/app.sqlite"), &db)?;
    drop(db);
    // 3. Images, ~25 %: incompressible; day 2 adds five and deletes two.
    std::fs::create_dir_all(root.join("uploads"))?;
    let images = (100.0 * scale) as u64;
    for i in 0..images {
        let mut img = vec![0u8; 2_500_000 + (i as usize % 7) * 10_000];
        Rng(1000 + i).fill(&mut img);
        let p = root.join(format!("uploads/img-{i:05}.jpg"));
        if day == 2 && i < 2 {
            let _ = std::fs::remove_file(&p);
            continue;
        }
        if !p.exists() {
            std::fs::write(&p, &img)?;
        }
    }
    if day == 2 {
        for i in 0..5 {
            let mut img = vec![0u8; 2_000_000];
            Rng(9000 + i).fill(&mut img);
            std::fs::write(root.join(format!("uploads/new-{i}.jpg")), &img)?;
        }
    }
    // 4. Many small files, ~10 %: day 2 changes 100 and adds 200.
    let small = (20_000.0 * scale) as u64;
    for i in 0..small + if day == 2 { 200 } else { 0 } {
        let dir = root.join(format!("static/d{:03}", i % 200));
        if i % 200 == i {
            std::fs::create_dir_all(&dir)?;
        }
        let mut r = Rng(i + 1);
        let n = 1000 + (r.next() % 9000) as usize;
        let mut text = String::with_capacity(n + 100);
        while text.len() < n {
            text.push_str(WORDS[(r.next() % 16) as usize]);
            text.push(' ');
        }
        if day == 2 && i % 200 == 7 {
            text.push_str("changed on day two");
        }
        std::fs::create_dir_all(&dir)?;
        let p = dir.join(format!("f{i}.txt"));
        let old = std::fs::read(&p).ok();
        if old.as_deref() != Some(text.as_bytes()) {
            std::fs::write(&p, text)?;
        }
    }
    Ok(())
}

fn du(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    n
}

#[derive(Clone, Copy, Default)]
struct Run {
    wall: f64,
    cpu: f64,
    /// The kernel's share of `cpu`: for a restore to disk, mostly the filesystem creating files.
    sys: f64,
    rss_mib: f64,
}

/// Runs `cmd` in a fresh child of a fresh child, so resource usage is this command's alone.
/// The last JSON object a command printed into the log (`coffer --json` pretty-prints: it starts
/// with a `{` line).
fn last_json(log: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    let at = text
        .rfind("\n{\n")
        .map(|i| i + 1)
        .or_else(|| text.starts_with("{\n").then_some(0))?;
    serde_json::Deserializer::from_str(&text[at..])
        .into_iter()
        .next()?
        .ok()
}

fn measure(cmd: &mut Command, log: &Path) -> Result<Run> {
    let me = std::env::current_exe()?;
    let mut m = Command::new(me);
    m.arg("__measure")
        .arg(log)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        m.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => m.env(k, v),
            None => m.env_remove(k),
        };
    }
    let out = m.stderr(Stdio::inherit()).output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("measure output")?;
    if v["code"] != 0 {
        bail!("{:?} failed ({}); see {}", cmd, v["code"], log.display());
    }
    Ok(Run {
        wall: v["wall"].as_f64().unwrap(),
        cpu: v["cpu"].as_f64().unwrap(),
        sys: v["sys"].as_f64().unwrap(),
        rss_mib: v["rss_kib"].as_f64().unwrap() / 1024.0,
    })
}

fn measure_child(args: &[String]) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[0])?;
    let start = Instant::now();
    let status = Command::new(&args[1])
        .args(&args[2..])
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    let wall = start.elapsed().as_secs_f64();
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({ "code": status.code().unwrap_or(-1), "wall": wall,
            "cpu": secs(u.user_time()) + secs(u.system_time()), "sys": secs(u.system_time()),
            "rss_kib": u.max_rss() })
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Restic,
    Coffer,
    Borg,
}

/// One tool under test: how it is asked to do each step, and what it did.
struct Tool {
    kind: Kind,
    name: &'static str,
    repo: PathBuf,
    bin: PathBuf,
    /// Where it keeps its cache (and, for borg, its keys and security records).
    home: PathBuf,
    runs: Vec<(String, Run)>,
    repo_bytes: u64,
    /// The repository's size after each backup step.
    sizes: Vec<u64>,
    /// The archives made so far (borg names each one).
    archives: u32,
}

impl Tool {
    fn new(kind: Kind, bin: PathBuf, dir: &Path) -> Tool {
        let name = match kind {
            Kind::Restic => "restic",
            Kind::Coffer => "coffer",
            Kind::Borg => "borg",
        };
        Tool {
            kind,
            name,
            repo: dir.join(format!("{name}-repo")),
            bin,
            home: dir.join(format!("{name}-home")),
            runs: vec![],
            repo_bytes: 0,
            sizes: vec![],
            archives: 0,
        }
    }

    /// The tool with its repository and passphrase in its environment: every tool opens its
    /// repository with a passphrase, as a user would, and pays its own KDF on every command
    /// (coffer's scrypt at 2^16, restic's calibrated scrypt, borg's PBKDF2).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args);
        match self.kind {
            Kind::Coffer => c
                .env("COFFER_REPOSITORY", &self.repo)
                .env("COFFER_PASSWORD", "bench")
                .env("COFFER_CACHE_DIR", &self.home),
            Kind::Restic => c
                .env("RESTIC_REPOSITORY", &self.repo)
                .env("RESTIC_PASSWORD", "bench")
                .env("RESTIC_CACHE_DIR", &self.home),
            Kind::Borg => c
                .env("BORG_REPO", &self.repo)
                .env("BORG_PASSPHRASE", "bench")
                .env("BORG_BASE_DIR", &self.home),
        };
        c
    }

    fn init(&self) -> Command {
        match self.kind {
            Kind::Borg => self.command(&["init", "--encryption=repokey-blake2"]),
            _ => self.command(&["init"]),
        }
    }

    fn backup(&mut self, src: &str) -> Command {
        self.archives += 1;
        match self.kind {
            Kind::Coffer => self.command(&["--json", "backup", src]),
            Kind::Restic => self.command(&["backup", "-q", src]),
            Kind::Borg => self.command(&["create", &format!("::a{}", self.archives), src]),
        }
    }

    /// Restores the newest snapshot into `target` (which exists).
    fn restore(&self, target: &Path) -> Command {
        let t = target.to_str().unwrap();
        match self.kind {
            Kind::Coffer => self.command(&["restore", "latest", "--target", t]),
            Kind::Restic => self.command(&["restore", "latest", "--target", t]),
            Kind::Borg => {
                // borg extracts into the working directory.
                let mut c = self.command(&["extract", &format!("::a{}", self.archives)]);
                c.current_dir(target);
                c
            }
        }
    }

    /// Where a restore into `target` puts the data that came from `data`.
    fn restored(&self, target: &Path, data: &Path) -> PathBuf {
        match self.kind {
            Kind::Coffer => target.join(data.file_name().unwrap()),
            _ => target.join(data.strip_prefix("/").unwrap()),
        }
    }

    /// Reads and checks every byte of the repository.
    fn check(&self) -> Command {
        match self.kind {
            Kind::Coffer => self.command(&["check", "--read-data"]),
            Kind::Restic => self.command(&["check", "--read-data"]),
            Kind::Borg => self.command(&["check", "--verify-data"]),
        }
    }

    /// The smallest command that unlocks the repository: list the snapshots.
    fn unlock(&self) -> Command {
        match self.kind {
            Kind::Borg => self.command(&["list"]),
            _ => self.command(&["snapshots"]),
        }
    }

    fn run(&mut self, step: &str, cmd: &mut Command, log: &Path) -> Result<Run> {
        // Every step starts with nothing dirty in the page cache: without this a step pays for
        // writing back what the step before wrote (a restore right after another tool's
        // restore of 1.15 GiB ran up to 2x slower), and which tool follows which is fixed.
        Command::new("sync").status()?;
        let r = measure(cmd, log)?;
        eprintln!(
            "{:<7} {step:<22} {:>7.2}s wall {:>7.2}s cpu {:>6.0} MiB rss",
            self.name, r.wall, r.cpu, r.rss_mib
        );
        self.runs.push((step.to_string(), r));
        Ok(r)
    }

    /// The median run of a step (the lower middle of an even count), and how many there were.
    fn median(&self, step: &str) -> Option<(Run, usize)> {
        let mut v: Vec<Run> = self
            .runs
            .iter()
            .filter(|r| r.0 == step)
            .map(|r| r.1)
            .collect();
        v.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let n = v.len();
        (n > 0).then(|| (v[(n - 1) / 2], n))
    }
}

fn tool_version(bin: &str, arg: &str) -> Option<String> {
    let o = Command::new(bin).arg(arg).output().ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_string()
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__measure") {
        return measure_child(&args[1..]);
    }
    let mut size_mib = 1024u64;
    let mut dir = std::env::temp_dir().join("coffer-bench");
    let mut s3 = false;
    let mut rounds = 2u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-mib" => size_mib = it.next().context("--size-mib N")?.parse()?,
            "--dir" => dir = PathBuf::from(it.next().context("--dir PATH")?),
            "--restore-rounds" => rounds = it.next().context("--restore-rounds N")?.parse()?,
            "--s3" => s3 = true,
            other => bail!(
                "unknown argument {other}; use --size-mib N --dir PATH [--restore-rounds N] [--s3]"
            ),
        }
    }
    let coffer = std::env::var_os("COFFER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().join("coffer")
        });
    anyhow::ensure!(
        coffer.exists(),
        "{} not found: run `cargo build --release` first (or set COFFER_BIN)",
        coffer.display()
    );
    if s3 {
        return s3_bench(&coffer, &dir, size_mib);
    }
    let restic = tool_version("restic", "version")
        .context("restic is not installed: apt-get install restic")?;
    let borg = tool_version("borg", "--version");
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data/app");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("bench.log");
    eprintln!("generating ~{size_mib} MiB in {}", data.display());
    generate(&data, size_mib, 1)?;
    let day1 = du(&data);
    eprintln!("day 1 dataset: {:.0} MiB", day1 as f64 / 1048576.0);

    let mut tools = vec![
        Tool::new(Kind::Restic, "restic".into(), &dir),
        Tool::new(Kind::Coffer, coffer.clone(), &dir),
    ];
    match &borg {
        Some(_) => tools.push(Tool::new(Kind::Borg, "borg".into(), &dir)),
        None => eprintln!("borg is not installed (apt-get install borgbackup): left out"),
    }
    let src = data.to_str().unwrap().to_string();
    for t in &mut tools {
        std::fs::create_dir_all(&t.home)?;
        measure(&mut t.init(), &log)?;
    }
    let steps: [(&str, u32); 3] = [
        ("first backup", 1),
        ("next-day backup", 2),
        ("no-change backup", 2),
    ];
    for (step, day) in steps {
        if day == 2 && step == "next-day backup" {
            generate(&data, size_mib, 2)?;
        }
        for t in &mut tools {
            let mut c = t.backup(&src);
            t.run(step, &mut c, &log)?;
            if t.kind == Kind::Coffer {
                if let Some(stages) = last_json(&log).map(|v| v["stages"].clone()) {
                    let parts: Vec<String> =
                        ["read", "chunk", "hash", "compress", "encrypt", "write"]
                            .iter()
                            .map(|k| format!("{k} {:.2}s", stages[*k].as_f64().unwrap_or(0.0)))
                            .collect();
                    eprintln!(
                        "        where the time went (summed over threads): {}",
                        parts.join(", ")
                    );
                }
            }
            t.sizes.push(du(&t.repo));
        }
    }
    let day2 = du(&data);
    for t in &mut tools {
        let mut c = t.unlock();
        t.run("unlock (list snapshots)", &mut c, &log)?;
    }
    for t in &mut tools {
        let mut c = t.check();
        t.run("check, all data", &mut c, &log)?;
        t.repo_bytes = du(&t.repo);
    }

    // Restore, interleaved (A B C, A B C, ...) because restore times on these machines swing by
    // 2x from one minute to the next: onto the disk the data came from, and into tmpfs
    // (/dev/shm), which takes the filesystem's inode allocator out of the figure.
    let shm = Path::new("/dev/shm");
    let mut targets = vec![("restore (disk)", dir.clone())];
    if shm.is_dir() {
        targets.push((
            "restore (tmpfs)",
            shm.join(format!("coffer-bench-{}", std::process::id())),
        ));
    }
    for (step, base) in &targets {
        for round in 0..rounds {
            for t in &mut tools {
                let target = base.join(format!("restore-{}-{round}", t.name));
                std::fs::create_dir_all(&target)?;
                let mut c = t.restore(&target);
                t.run(step, &mut c, &log)?;
                let got = du(&t.restored(&target, &data));
                anyhow::ensure!(
                    got == day2,
                    "{} restored {got} bytes, expected {day2}",
                    t.name
                );
                if base.starts_with(shm) {
                    // tmpfs is memory: one restore at a time.
                    std::fs::remove_dir_all(&target)?;
                }
            }
        }
        // On disk every restore stays until all ran: ext4 scans past recently deleted inodes
        // when it allocates, so deleting one restore right before the next slows the next.
        for round in 0..rounds {
            for t in &tools {
                let _ = std::fs::remove_dir_all(base.join(format!("restore-{}-{round}", t.name)));
            }
        }
    }
    let _ = std::fs::remove_dir_all(shm.join(format!("coffer-bench-{}", std::process::id())));

    // Report: medians, ratios to restic (> 1: faster than restic).
    let mib = |b: u64| b as f64 / 1048576.0;
    let names: Vec<&str> = tools.iter().map(|t| t.name).collect();
    println!(
        "\n{} on {:.0} MiB (day 2: {:.0} MiB), {} cores; restic {restic}{}; medians of {rounds} interleaved restores",
        names.join(" vs "),
        mib(day1),
        mib(day2),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        borg.as_deref().map(|v| format!(", borg {v}")).unwrap_or_default()
    );
    let mut header = format!("{:<24}", "step");
    for t in &tools {
        header.push_str(&format!(" {:>22}", format!("{} s / cpu / RSS", t.name)));
    }
    for t in &tools[1..] {
        header.push_str(&format!(" {:>10}", format!("{} x", t.name)));
    }
    println!("{header}");
    let steps: Vec<String> = {
        let mut v: Vec<String> = vec![];
        for (s, _) in &tools[0].runs {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    };
    let ratio = |t: &Tool, step: &str| {
        let (r, _) = tools[0].median(step)?;
        let (c, _) = t.median(step)?;
        Some(r.wall / c.wall)
    };
    for step in &steps {
        let mut line = format!("{step:<24}");
        for t in &tools {
            match t.median(step) {
                Some((r, _)) => line.push_str(&format!(
                    " {:>22}",
                    format!("{:.2} / {:.2} / {:.0}M", r.wall, r.cpu, r.rss_mib)
                )),
                None => line.push_str(&format!(" {:>22}", "-")),
            }
        }
        for t in &tools[1..] {
            match ratio(t, step) {
                Some(x) => line.push_str(&format!(" {:>9.2}x", x)),
                None => line.push_str(&format!(" {:>10}", "-")),
            }
        }
        println!("{line}");
    }
    for step in ["restore (disk)", "restore (tmpfs)"] {
        for t in &tools {
            let all: Vec<String> = t
                .runs
                .iter()
                .filter(|r| r.0 == step)
                .map(|r| format!("{:.2} ({:.2} sys)", r.1.wall, r.1.sys))
                .collect();
            if !all.is_empty() {
                // The kernel's CPU beside each: on ext4 a restore's time swings with the inode
                // allocator's state (recently freed inodes, bitmaps not yet read), and shows there.
                println!("  {step}, {} runs in order: {} s", t.name, all.join(", "));
            }
        }
    }
    let gib = day1 as f64 / (1u64 << 30) as f64;
    for t in &tools {
        if let Some((r, _)) = t.median("first backup") {
            println!(
                "first backup CPU per GiB: {} {:.2} CPU-s/GiB",
                t.name,
                r.cpu / gib
            );
        }
    }
    let added = |t: &Tool| {
        t.sizes
            .get(1)
            .zip(t.sizes.first())
            .map(|(b, a)| b.saturating_sub(*a))
            .unwrap_or(0)
    };
    let mut line = String::from("repository size:");
    for t in &tools {
        line.push_str(&format!(" {} {:.1} MiB", t.name, mib(t.repo_bytes)));
    }
    println!("{line}");
    let mut line = String::from("next-day bytes added:");
    for t in &tools {
        line.push_str(&format!(" {} {:.1} MiB", t.name, mib(added(t))));
    }
    println!("{line}");

    let coffer_t = &tools[1];
    println!("\ntargets (issue 14):");
    let met = |ok: bool| if ok { "MET" } else { "NOT MET" };
    for (step, want) in [
        ("first backup", 1.6),
        ("restore (disk)", 1.5),
        ("restore (tmpfs)", 1.5),
    ] {
        if let Some(x) = ratio(coffer_t, step) {
            println!(
                "  {step:<17} >= {want:.1}x restic throughput: {x:.2}x  {}",
                met(x >= want)
            );
        }
    }
    if let Some(x) = ratio(coffer_t, "no-change backup") {
        println!(
            "  no-change backup  <= 1/3 of restic's time: {:.2} of it  {}",
            1.0 / x,
            met(x >= 3.0)
        );
    }
    let peak = |t: &Tool| t.runs.iter().map(|r| r.1.rss_mib).fold(0.0, f64::max);
    let mut others = vec![];
    for t in &tools {
        if t.kind != Kind::Coffer {
            others.push(format!("{} {:.0} MiB", t.name, peak(t)));
        }
    }
    println!(
        "  peak RSS <= 90 MiB in every step: coffer {:.0} MiB ({})  {}",
        peak(coffer_t),
        others.join(", "),
        met(peak(coffer_t) <= 90.0)
    );
    if let Some((u, _)) = coffer_t.median("unlock (list snapshots)") {
        println!(
            "  unlock <= 0.3 s: {:.2} s, {:.0} MiB  {}",
            u.wall,
            u.rss_mib,
            met(u.wall <= 0.3)
        );
    }
    let (ra, ca) = (added(&tools[0]), added(coffer_t));
    println!(
        "  next-day bytes added <= 0.75x restic's: {:.2}x  {}",
        ca as f64 / ra.max(1) as f64,
        met((ca as f64) <= 0.75 * ra as f64)
    );
    println!(
        "  repository size <= restic's: {}",
        met(coffer_t.repo_bytes <= tools[0].repo_bytes)
    );
    println!(
        "(every tool opens its repository with a passphrase: each runs its KDF on every command)"
    );
    Ok(())
}

/// coffer against a real S3 server (single-node Garage on loopback) through a counting proxy:
/// throughput, and the PUT/GET/LIST requests per GiB an S3 bill would charge.
fn s3_bench(coffer: &Path, dir: &Path, size_mib: u64) -> Result<()> {
    use coffer_testkit::{FaultProxy, Garage, Kind};
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data/app");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("bench-s3.log");
    eprintln!("generating ~{size_mib} MiB in {}", data.display());
    generate(&data, size_mib, 1)?;
    let day1 = du(&data);
    eprintln!("starting Garage (built with cargo install on first use)");
    let garage = Garage::single();
    let proxy = FaultProxy::start(garage.endpoint());
    let cmd = |args: &[&str]| {
        let mut c = Command::new(coffer);
        c.args(args)
            .envs(garage.client_env())
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("COFFER_REPOSITORY", "s3://test/bench")
            .env("COFFER_PASSWORD", "bench")
            .env("COFFER_CACHE_DIR", dir.join("coffer-cache"));
        c
    };
    measure(&mut cmd(&["init"]), &log)?;
    let mib = |b: u64| b as f64 / 1048576.0;
    let src = data.to_str().unwrap().to_string();
    let restore = dir.join("restore");
    let restore_s = restore.to_str().unwrap().to_string();
    println!(
        "\ncoffer on S3 (Garage 2.5, single node, loopback; uploads in flight: COFFER_S3_UPLOADS or 4), {:.0} MiB",
        mib(day1)
    );
    println!(
        "{:<17} {:>9} {:>10} {:>6} {:>6} {:>6} {:>6} {:>7} {:>12}",
        "step", "wall s", "MiB/s", "PUT", "GET", "LIST", "HEAD", "DELETE", "PUT+GET/GiB"
    );
    let steps: [(&str, Vec<&str>); 4] = [
        ("first backup", vec!["backup", &src]),
        ("next-day backup", vec!["backup", &src]),
        ("no-change backup", vec!["backup", &src]),
        ("restore", vec!["restore", "latest", "--target", &restore_s]),
    ];
    for (step, args) in steps {
        if step == "next-day backup" {
            generate(&data, size_mib, 2)?;
        }
        proxy.reset_counts();
        let r = measure(&mut cmd(&args), &log)?;
        let n = proxy.counts();
        let count = |k: Kind| n.get(&k).copied().unwrap_or(0);
        let size = du(&data);
        let per_gib =
            (count(Kind::Put) + count(Kind::Get)) as f64 / (size as f64 / (1u64 << 30) as f64);
        println!(
            "{:<17} {:>9.2} {:>10.1} {:>6} {:>6} {:>6} {:>6} {:>7} {:>12.0}",
            step,
            r.wall,
            mib(size) / r.wall,
            count(Kind::Put),
            count(Kind::Get),
            count(Kind::List),
            count(Kind::Head),
            count(Kind::Delete),
            per_gib
        );
    }
    anyhow::ensure!(
        du(&restore.join("app")) == du(&data),
        "the restore differs in size"
    );
    println!("(requests counted at the proxy, as the server saw them; a 16 MiB pack is one PUT)");
    Ok(())
}
