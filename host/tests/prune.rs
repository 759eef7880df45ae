//! `prune`: two phases with a grace period; what a snapshot needs is never deleted, partly used
//! packs are repacked, the index is compacted, a backup racing a prune either lands safely or
//! refuses to save, and `prune` killed at any moment leaves every snapshot whole.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_repo::archiver::{Counters, Session, SnapshotInfo};
use common::*;

on_each_store!(
    forgotten_data_goes_after_the_grace_period,
    partly_used_packs_are_repacked,
    a_backup_racing_a_prune_lands_or_refuses,
);

fn write_files(dir: &Path, names: &[&str], seed: u64, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.join(n), noise(size, seed + 2 * i as u64)).unwrap();
    }
}

/// Bytes of every pack in the store (listed, not as the index says).
fn stored_bytes(env: &Env) -> u64 {
    let repo = env.open_repo();
    repo.backend()
        .list("data/")
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum()
}

fn forgotten_data_goes_after_the_grace_period(env: Env) {
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    write_files(&src, &["a.bin", "b.bin", "c.bin"], 11, 3_000_000);
    let first = env.backup(&src);
    std::fs::remove_file(src.join("a.bin")).unwrap();
    write_files(&src, &["d.bin"], 51, 1_000_000);
    settle();
    let second = env.backup(&src);
    let keep = manifest(&src);
    let before = stored_bytes(&env);

    env.json(&["forget", "--keep-last", "1"]);
    // Packs younger than the grace period are left alone (they may be a running backup's).
    let young = env.json(&["prune", "--grace", "1h"]);
    assert_eq!(young["packs_marked"], 0, "{young}");
    assert!(young["packs_too_young"].as_u64().unwrap() >= 1, "{young}");
    let dry = env.json(&["prune", "--grace", "0s", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["packs_marked"].as_u64().unwrap() >= 1, "{dry}");
    // Phase 1: marked, nothing deleted yet. Packs shared by a.bin and kept files are repacked
    // however little of them is unused, so all of a.bin goes.
    std::thread::sleep(Duration::from_secs(3));
    let mark = env.json(&["prune", "--grace", "3s", "--repack-unused", "0"]);
    assert!(mark["packs_marked"].as_u64().unwrap() >= 1, "{mark}");
    assert_eq!(mark["packs_deleted"], 0, "{mark}");
    // Nothing deleted (a repack may have added a pack).
    assert!(stored_bytes(&env) >= before);
    let again = env.json(&["prune", "--grace", "3s"]);
    assert_eq!(
        again["marks_waiting"].as_array().unwrap().len(),
        1,
        "{again}"
    );
    assert_eq!(again["packs_marked"], 0, "marked twice: {again}");
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("marked by a prune"), "{check}");

    // Phase 2 once the grace period has passed: a.bin's 3 MB go, everything kept restores.
    std::thread::sleep(Duration::from_secs(4));
    let swept = env.json(&["prune", "--grace", "3s"]);
    assert_eq!(swept["marks_swept"], 1, "{swept}");
    assert!(swept["packs_deleted"].as_u64().unwrap() >= 1, "{swept}");
    assert_eq!(swept["packs_recovered"], 0, "{swept}");
    let after = stored_bytes(&env);
    assert!(
        before - after > 2_900_000,
        "a.bin's 3 MB should be gone: {before} -> {after}"
    );
    env.ok(&["check", "--read-data"]);
    let restored = env.restore(second["snapshot"].as_str().unwrap(), "src");
    assert_same(&keep, &manifest(&restored));
    env.fails(&["ls", first["snapshot"].as_str().unwrap()], 1);
    // The swept mark is retired by the next prune once no index names its packs.
    let last = env.json(&["prune", "--grace", "0s"]);
    assert!(last["swept_marks_retired"].as_u64().unwrap() >= 1, "{last}");
    assert_eq!(env.open_repo().load_marks().unwrap().0.len(), 0);
}

fn partly_used_packs_are_repacked(env: Env) {
    // 40 small files (one chunk each) in the packs of two workers; two thirds of them are then
    // forgotten, in a pattern that leaves every pack partly used.
    env.ok(&["init"]);
    let src = env.path("src");
    let names: Vec<String> = (0..40).map(|i| format!("f{i:02}.bin")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    write_files(&src, &refs, 101, 200_000);
    env.backup(&src);
    for (i, n) in names.iter().enumerate() {
        if i % 3 != 0 {
            std::fs::remove_file(src.join(n)).unwrap();
        }
    }
    settle();
    let second = env.backup(&src);
    let keep = manifest(&src);
    env.json(&["forget", "--keep-last", "1"]);
    let index_before = env.open_repo().list_index_ids().unwrap().len();
    let before = stored_bytes(&env);
    let marked = env.json(&["prune", "--grace", "0s", "--repack-unused", "30"]);
    // Whole-second store clocks: a mark with no grace matures within two seconds.
    std::thread::sleep(Duration::from_secs(2));
    assert!(marked["packs_repacked"].as_u64().unwrap() >= 1, "{marked}");
    assert!(
        marked["bytes_repacked"].as_u64().unwrap() >= 1_000_000,
        "{marked}"
    );
    let swept = env.json(&["prune", "--grace", "0s"]);
    assert!(swept["packs_deleted"].as_u64().unwrap() >= 1, "{swept}");
    // Compaction: a backup writes one index object per few packs; now there is one.
    assert!(
        swept["index_objects_after"].as_u64().unwrap() <= 1 && index_before >= 2,
        "{index_before} -> {swept}"
    );
    // 26 of 40 files gone from the store, and no pack left that is 30 % unused.
    let after = stored_bytes(&env);
    assert!(before - after > 4_500_000, "{before} -> {after}");
    let left = env.json(&[
        "prune",
        "--grace",
        "0s",
        "--repack-unused",
        "30",
        "--dry-run",
    ]);
    assert_eq!(left["packs_marked"], 0, "{left}");
    env.ok(&["check", "--read-data"]);
    let restored = env.restore(second["snapshot"].as_str().unwrap(), "src");
    assert_same(&keep, &manifest(&restored));
}

/// A backup that loaded its index before a prune marked the packs it reuses: saved while the
/// grace period leaves room (and the sweep then keeps those packs), refused once it does not.
fn a_backup_racing_a_prune_lands_or_refuses(env: Env) {
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    write_files(&src, &["x.bin", "y.bin"], 201, 1_500_000);
    settle();
    env.backup(&src);
    let repo = Arc::new(env.open_repo());
    // Old enough to be marked with 8 s of grace (on a store clock with whole seconds).
    std::thread::sleep(Duration::from_millis(9500));

    // Started before the mark: its index still offers x and y.
    let mut early = Session::start(repo.clone(), None, Arc::new(Counters::default())).unwrap();
    let mut late = Session::start(repo.clone(), None, Arc::new(Counters::default())).unwrap();
    // The only snapshot goes: x and y are unused and get marked.
    for (id, _) in repo.list_snapshots().unwrap() {
        repo.backend()
            .delete(&coffer_repo::snapshot::key(&id))
            .unwrap();
    }
    let marked = env.json(&["prune", "--grace", "8s"]);
    assert!(marked["packs_marked"].as_u64().unwrap() >= 2, "{marked}");
    let t = Instant::now();

    // Within the grace period (less the margin): saved, relying on the marked packs.
    early.add_path(Path::new("src"), &src).unwrap();
    let saved = early
        .finish(SnapshotInfo {
            paths: vec![src.display().to_string()],
            ..Default::default()
        })
        .expect("a backup well inside the grace period is saved");
    assert_eq!(saved.summary.bytes_read, 3_000_000);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the test machine is too slow"
    );
    // An index loaded after the mark still finds x's chunks (for reading) but offers none of
    // them for reuse: a backup started now stores them anew.
    let (index, _) = repo.load_index().unwrap();
    let marked_chunks: Vec<_> = index
        .chunks()
        .filter(|(_, _, e)| e.tag == coffer_repo::crypto::Tag::Data)
        .map(|(c, _, _)| c)
        .collect();
    assert!(marked_chunks.len() >= 2);
    assert!(marked_chunks
        .iter()
        .all(|c| index.contains(c) && !index.reuse(c)));

    // Past the deadline: refused, with a message that says what to do.
    late.add_path(Path::new("src"), &src).unwrap();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t.elapsed()));
    let err = late
        .finish(SnapshotInfo {
            paths: vec![src.display().to_string()],
            ..Default::default()
        })
        .map(|r| r.snapshot)
        .expect_err("a backup relying on packs past their grace period must not be saved");
    assert!(err.to_string().contains("run the backup again"), "{err}");

    // The sweep keeps the packs the early snapshot needs.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(t.elapsed()));
    let swept = env.json(&["prune", "--grace", "8s"]);
    assert!(swept["packs_recovered"].as_u64().unwrap() >= 2, "{swept}");
    env.ok(&["check", "--read-data"]);
    let restored = env.restore(&saved.snapshot.to_hex(), "src");
    assert_same(&manifest(&src), &manifest(&restored));
}

/// A backup killed between writing a pack's staged file and renaming it into place leaves
/// `data/xx/<id>#<digits>`, which listings skip, so no rule about unreferenced packs ever sees
/// it: prune removes such a file once nothing has touched it for the grace period, leaves a
/// fresh one alone (a write in progress), and the repository stays whole. Local store only:
/// S3 writes an object in one request, and has no staged files.
#[test]
fn staged_files_a_killed_write_left_go_after_the_grace_period() {
    let env = Env::new();
    let src = env.path("src");
    write_files(&src, &["a.bin", "b.bin"], 3, 2_000_000);
    let saved = env.backup(&src);
    let keep = manifest(&src);
    let pack = env.objects("data/")[0].clone();
    let staged = |digits: &str| std::path::PathBuf::from(format!("{}#{digits}", pack.display()));
    let (old, fresh) = (staged("1234"), staged("5678"));
    std::fs::copy(&pack, &old).unwrap();
    std::fs::copy(&pack, &fresh).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let size = std::fs::metadata(&old).unwrap().len();

    let dry = env.json(&["prune", "--grace", "1h", "--dry-run"]);
    assert_eq!(dry["abandoned_files"], 1, "{dry}");
    assert_eq!(dry["abandoned_bytes"], size, "{dry}");
    assert!(old.exists(), "a dry run removes nothing");
    let done = env.json(&["prune", "--grace", "1h"]);
    assert_eq!(done["abandoned_files"], 1, "{done}");
    assert!(!old.exists(), "the abandoned staged file is gone");
    assert!(
        fresh.exists(),
        "a staged file touched within the grace period stays"
    );
    assert!(pack.exists());
    let human = env.ok(&["prune", "--grace", "0s", "--dry-run"]);
    assert!(
        human.contains("1 staged file(s)") && human.contains("would be removed"),
        "{human}"
    );
    env.ok(&["check", "--read-data"]);
    let restored = env.restore(saved["snapshot"].as_str().unwrap(), "src");
    assert_same(&keep, &manifest(&restored));
}

/// `prune` killed with SIGKILL at random moments, while it marks, repacks, compacts and
/// deletes: every remaining snapshot restores identical and `check --read-data` passes.
/// On Garage, with prune talking through a proxy that adds 10 ms to each request (a local prune
/// takes 15 ms, too quick to hit reliably; this one takes a few hundred).
#[test]
fn sigkill_during_prune_loses_nothing() {
    let garage = coffer_testkit::Garage::shared();
    let env = Env::s3_uninit(garage);
    let proxy = coffer_testkit::FaultProxy::start(garage.endpoint());
    proxy.set_plan(coffer_testkit::Plan::slow(Duration::from_millis(10)));
    let mut slow = env.sharing();
    slow.set_endpoint(&proxy.endpoint());
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    let mut rng = Rng(0x5eed_1234_u64 ^ std::process::id() as u64);
    let mut kept: Vec<(String, std::collections::BTreeMap<Vec<u8>, Entry>)> = vec![];
    let mut kills = 0;
    let mut mid_run = 0;
    for round in 0..12u64 {
        // Churn: files come and go, so every prune has garbage, partly used packs and marks.
        write_files(
            &src,
            &[&format!("r{round}.bin")],
            1000 + 10 * round,
            1_200_000,
        );
        let names: Vec<String> = (0..20).map(|i| format!("small-{round}-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        write_files(&src.join("small"), &refs, 5000 + 100 * round, 30_000);
        if round >= 2 {
            let _ = std::fs::remove_file(src.join(format!("r{}.bin", round - 2)));
            for i in 0..20 {
                let _ = std::fs::remove_file(src.join(format!("small/small-{}-{i}", round - 2)));
            }
        }
        settle();
        let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
        kept.push((snap, manifest(&src)));
        env.json(&["forget", "--keep-last", "3"]);
        kept.drain(..kept.len().saturating_sub(3));

        // A dry run reads what the real one reads: its time spreads the kills over the run.
        let t = Instant::now();
        slow.ok(&[
            "prune",
            "--grace",
            "0s",
            "--repack-unused",
            "10",
            "--dry-run",
        ]);
        let span = t.elapsed().as_millis() as u64 * 3 / 2 + 20;
        let t = Instant::now();
        let args = ["prune", "--grace", "0s", "--repack-unused", "10"];
        if kill_at_random(&slow, &args, &mut rng, span) {
            mid_run += 1;
        }
        kills += 1;
        eprintln!("round {round}: killed after {:?}", t.elapsed());
        assert_intact(
            &env,
            &format!("round {round}, after a killed prune"),
            &kept,
            "src",
        );
    }
    // Finally an uninterrupted prune cleans up what the killed ones left.
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check", "--read-data"]);
    eprintln!("{mid_run} of {kills} kills landed while prune ran");
    assert!(
        mid_run >= 6,
        "too few kills hit a running prune ({mid_run})"
    );
}
