//! coffer-bench: coffer and restic side by side on the same generated, app-like dataset.
//!
//! `cargo run --release -p coffer-bench [-- --size-mib 1024 --dir /tmp/coffer-bench]`
//!
//! Generates ~1 GiB (a plain-SQL dump, a paged database file, incompressible images, many small
//! files), then for each tool: first backup, next-day backup (shifting SQL edits, rewritten pages,
//! new and changed files), no-change backup, and restore of the last snapshot. Every step runs in a
//! fresh child so its CPU time and peak RSS are its own. Prints MiB/s, CPU seconds, peak RSS,
//! repository size and the ratio to restic, and says which targets are met. It is a program, not a
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
            "cpu": secs(u.user_time()) + secs(u.system_time()), "rss_kib": u.max_rss() })
    );
    Ok(())
}

struct Tool {
    name: &'static str,
    repo: PathBuf,
    runs: Vec<(&'static str, Run)>,
    repo_bytes: u64,
    /// The repository's size after each backup step.
    sizes: Vec<u64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__measure") {
        return measure_child(&args[1..]);
    }
    let mut size_mib = 1024u64;
    let mut dir = std::env::temp_dir().join("coffer-bench");
    let mut s3 = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-mib" => size_mib = it.next().context("--size-mib N")?.parse()?,
            "--dir" => dir = PathBuf::from(it.next().context("--dir PATH")?),
            "--s3" => s3 = true,
            other => bail!("unknown argument {other}; use --size-mib N --dir PATH [--s3]"),
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
    let restic_ok = Command::new("restic")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    anyhow::ensure!(restic_ok, "restic is not installed: apt-get install restic");
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data/app");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("bench.log");
    eprintln!("generating ~{size_mib} MiB in {}", data.display());
    generate(&data, size_mib, 1)?;
    let day1 = du(&data);
    eprintln!("day 1 dataset: {:.0} MiB", day1 as f64 / 1048576.0);

    // Every tool opens its repository with a passphrase, as a user would: each pays its own KDF
    // on every command (coffer's scrypt at 2^16, restic's at its calibrated setting).
    let coffer_cmd = |repo: &Path, args: &[&str]| {
        let mut c = Command::new(&coffer);
        c.args(args)
            .env("COFFER_REPOSITORY", repo)
            .env("COFFER_PASSWORD", "bench")
            .env("COFFER_CACHE_DIR", dir.join("coffer-cache"));
        c
    };
    let restic_cmd = |repo: &Path, args: &[&str]| {
        let mut c = Command::new("restic");
        c.args(args)
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", dir.join("restic-cache"));
        c
    };
    let mut tools = vec![
        Tool {
            name: "restic",
            repo: dir.join("restic-repo"),
            runs: vec![],
            repo_bytes: 0,
            sizes: vec![],
        },
        Tool {
            name: "coffer",
            repo: dir.join("coffer-repo"),
            runs: vec![],
            repo_bytes: 0,
            sizes: vec![],
        },
    ];
    let src = data.to_str().unwrap().to_string();
    for t in &mut tools {
        let cmd = |args: &[&str]| {
            if t.name == "coffer" {
                coffer_cmd(&t.repo, args)
            } else {
                restic_cmd(&t.repo, args)
            }
        };
        measure(&mut cmd(&["init"]), &log)?;
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
            let mut c = if t.name == "coffer" {
                coffer_cmd(&t.repo, &["--json", "backup", &src])
            } else {
                restic_cmd(&t.repo, &["backup", "-q", &src])
            };
            let r = measure(&mut c, &log)?;
            eprintln!(
                "{:<7} {step:<17} {:>7.2}s wall {:>7.2}s cpu {:>6.0} MiB rss",
                t.name, r.wall, r.cpu, r.rss_mib
            );
            if t.name == "coffer" {
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
            t.runs.push((step, r));
            t.sizes.push(du(&t.repo));
        }
    }
    let day2 = du(&data);
    // Restore twice: onto the disk the data came from, and into tmpfs (/dev/shm), which takes the
    // filesystem's inode allocator out of the figure and leaves the tools' own cost.
    let shm = Path::new("/dev/shm");
    let mut targets = vec![("restore", dir.clone())];
    if shm.is_dir() {
        targets.push((
            "restore (tmpfs)",
            shm.join(format!("coffer-bench-{}", std::process::id())),
        ));
    }
    for (step, base) in &targets {
        for t in &mut tools {
            let target = base.join(format!("restore-{}", t.name));
            let t_str = target.to_str().unwrap().to_string();
            let mut c = if t.name == "coffer" {
                coffer_cmd(&t.repo, &["restore", "latest", "--target", &t_str])
            } else {
                restic_cmd(&t.repo, &["restore", "latest", "--target", &t_str])
            };
            let r = measure(&mut c, &log)?;
            eprintln!(
                "{:<7} {:<17} {:>7.2}s wall {:>7.2}s cpu {:>6.0} MiB rss",
                t.name, step, r.wall, r.cpu, r.rss_mib
            );
            t.runs.push((step, r));
            let restored = if t.name == "coffer" {
                target.join("app")
            } else {
                target.join(data.strip_prefix("/").unwrap())
            };
            let got = du(&restored);
            anyhow::ensure!(
                got == day2,
                "{} restored {got} bytes, expected {day2}",
                t.name
            );
            t.repo_bytes = du(&t.repo);
        }
        // Both restores stay until both ran: ext4 scans past recently deleted inodes when it
        // allocates, so deleting one tool's restore right before the other's slows the second.
        for t in &tools {
            std::fs::remove_dir_all(base.join(format!("restore-{}", t.name)))?;
        }
    }
    let _ = std::fs::remove_dir_all(shm.join(format!("coffer-bench-{}", std::process::id())));

    // Report.
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "\ncoffer vs restic {} on {:.0} MiB (day 2: {:.0} MiB), {} cores",
        restic_version(),
        mib(day1),
        mib(day2),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<17} {:>14} {:>14} {:>8} {:>10} {:>10} {:>9} {:>9}",
        "step",
        "restic MiB/s",
        "coffer MiB/s",
        "ratio",
        "restic cpu",
        "coffer cpu",
        "restic RSS",
        "coffer RSS"
    );
    let mut ratios = vec![];
    for i in 0..tools[0].runs.len() {
        let (step, r) = tools[0].runs[i];
        let (_, c) = tools[1].runs[i];
        let size = if step == "first backup" { day1 } else { day2 };
        let ratio = r.wall / c.wall;
        ratios.push((step, ratio, r, c));
        println!(
            "{:<17} {:>14.1} {:>14.1} {:>7.2}x {:>9.2}s {:>9.2}s {:>6.0} MiB {:>6.0} MiB",
            step,
            mib(size) / r.wall,
            mib(size) / c.wall,
            ratio,
            r.cpu,
            c.cpu,
            r.rss_mib,
            c.rss_mib
        );
    }
    println!(
        "repository size:  restic {:.1} MiB, coffer {:.1} MiB ({:.2}x)",
        mib(tools[0].repo_bytes),
        mib(tools[1].repo_bytes),
        tools[1].repo_bytes as f64 / tools[0].repo_bytes as f64
    );
    // Steps: first, next-day, no-change: what the next day added.
    let added = |t: &Tool| {
        t.sizes
            .get(1)
            .zip(t.sizes.first())
            .map(|(b, a)| b.saturating_sub(*a))
            .unwrap_or(0)
    };
    let (ra, ca) = (added(&tools[0]), added(&tools[1]));
    println!(
        "next-day bytes added: restic {:.1} MiB, coffer {:.1} MiB ({:.2}x)",
        mib(ra),
        mib(ca),
        ca as f64 / ra.max(1) as f64
    );
    println!("\ntargets:");
    let target = |step: &str, want: f64| {
        let (_, ratio, _, _) = ratios.iter().find(|x| x.0 == step).unwrap();
        println!(
            "  {step:<17} >= {want:.1}x restic throughput: {:.2}x  {}",
            ratio,
            if *ratio >= want { "MET" } else { "NOT MET" }
        );
    };
    target("first backup", 1.6);
    target("no-change backup", 3.0);
    target("restore", 1.5);
    if ratios.iter().any(|x| x.0 == "restore (tmpfs)") {
        target("restore (tmpfs)", 1.5);
    }
    let peak = |i: usize| {
        tools[i]
            .runs
            .iter()
            .map(|r| r.1.rss_mib)
            .fold(0.0, f64::max)
    };
    println!(
        "  peak RSS <= 90 MiB in every step: coffer {:.0} MiB (restic {:.0} MiB)  {}",
        peak(1),
        peak(0),
        if peak(1) <= 90.0 { "MET" } else { "NOT MET" }
    );
    println!(
        "  next-day bytes added <= 0.75x restic's: {:.2}x  {}",
        ca as f64 / ra.max(1) as f64,
        if (ca as f64) <= 0.75 * ra as f64 {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!(
        "  repository size <= restic's: {}",
        if tools[1].repo_bytes <= tools[0].repo_bytes {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!("(both open with a passphrase: each runs its KDF on every command)");
    Ok(())
}

fn restic_version() -> String {
    Command::new("restic")
        .arg("version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default()
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
