//! Crash safety: `coffer backup` killed with SIGKILL at random moments never damages the
//! repository. After each kill, `check --read-data` passes, every earlier snapshot restores
//! identical, and the next backup succeeds.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;

on_each_store!(sigkill_during_backup_never_damages_the_repository);

fn sigkill_during_backup_never_damages_the_repository(env: Env) {
    // Fewer rounds against S3: each round restores every earlier snapshot over HTTP.
    let rounds = if env.location.starts_with("s3://") {
        10
    } else {
        22
    };
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("text")).unwrap();
    for i in 0..40 {
        let line = format!("row {i} of a table that compresses well enough to matter\n");
        std::fs::write(
            src.join(format!("text/t{i}.sql")),
            line.repeat(8_000 + i * 50),
        )
        .unwrap();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut snapshots: Vec<(String, BTreeMap<Vec<u8>, Entry>)> = vec![];

    // How long a backup of this source takes, to spread the kills over it. Each round times
    // its own completing backup again (same shape as the killed one: --no-cache, a new file to
    // upload), since later backups upload less than the first and a loaded machine runs slower.
    let t = Instant::now();
    let first = env.backup(&src);
    let mut span = t.elapsed().as_millis() as u64 + 30;
    snapshots.push((
        first["snapshot"].as_str().unwrap().to_string(),
        manifest(&src),
    ));
    let mut kills_mid_run = 0;
    for round in 0..rounds {
        // New and changed data each round, so the killed backup has something to upload.
        std::fs::write(
            src.join(format!("new-{round}.bin")),
            noise(3_000_000, 1000 + round),
        )
        .unwrap();
        std::fs::write(
            src.join("text/t0.sql"),
            format!("changed in round {round}\n").repeat(20_000),
        )
        .unwrap();
        if kill_at_random(
            &env,
            &["backup", "--no-cache", src.to_str().unwrap()],
            &mut rng,
            span,
        ) {
            kills_mid_run += 1;
        }
        assert_intact(
            &env,
            &format!("round {round}, after a killed backup"),
            &snapshots,
            "src",
        );
        std::fs::write(
            src.join(format!("late-{round}.bin")),
            noise(1_000_000, 5000 + round),
        )
        .unwrap();
        let t = Instant::now();
        let next = env.json(&["backup", "--no-cache", src.to_str().unwrap()]);
        // The killed run uploads a little less than this one (no late file): aim inside it.
        span = t.elapsed().as_millis() as u64 * 4 / 5 + 20;
        snapshots.push((
            next["snapshot"].as_str().unwrap().to_string(),
            manifest(&src),
        ));
    }
    eprintln!("{kills_mid_run} of {rounds} kills landed while the backup ran");
    assert!(
        kills_mid_run >= rounds / 2,
        "too few kills hit a running backup ({kills_mid_run}); the test did not test"
    );
    env.ok(&["check", "--read-data"]);
}
