//! The index table in the cache (docs/FORMAT.md, "Local index table"): used while it is current,
//! never believed when it is stale (a prune compacted the index), damaged, or another
//! repository's.

mod common;
use common::*;

use std::path::PathBuf;

fn table_of(env: &Env) -> PathBuf {
    let tables: Vec<PathBuf> = std::fs::read_dir(&env.cache)
        .unwrap()
        .map(|e| e.unwrap().path().join("index.table"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(
        tables.len(),
        1,
        "one index table in {}",
        env.cache.display()
    );
    tables[0].clone()
}

fn restored_same(env: &Env, snapshot: &str, src: &std::path::Path, name: &str) {
    let target = env.path(name);
    env.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    assert_same(&manifest(src), &manifest(&target.join("src")));
}

#[test]
fn the_index_table_is_used_while_current_and_never_believed_when_stale_or_damaged() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("kept"), noise(3 << 20, 1)).unwrap();
    std::fs::write(src.join("dropped"), noise(3 << 20, 2)).unwrap();
    settle();
    let s = src.to_str().unwrap();
    let first = env.json(&["backup", s])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // The next command to read the index writes the table (the first found an empty one).
    env.ok(&["backup", s]);
    let table = table_of(&env);

    // Current: the index objects it holds are not fetched again. One of them damaged in the
    // store goes unnoticed by a backup and a restore (they read the table)...
    let objects = env.objects("index");
    let victim = objects[0].clone();
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"not an index object").unwrap();
    let out = env.run(&["backup", s]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("unreadable"),
        "the backup read an index object the table holds: {log}"
    );
    restored_same(&env, &first, &src, "r1");
    // ...but not by check, which verifies the objects themselves.
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(13));
    let report = String::from_utf8_lossy(&out.stdout);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        report.contains(name),
        "check did not name the damaged {name}: {report}"
    );
    std::fs::write(&victim, &original).unwrap();
    env.ok(&["check"]);

    // Damaged: a warning, rebuilt from the objects, answers right.
    let mut bytes = std::fs::read(&table).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x40;
    std::fs::write(&table, &bytes).unwrap();
    let out = env.run(&["backup", s]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("hash does not match"),
        "no warning about the damaged table: {log}"
    );
    assert_ne!(
        std::fs::read(&table).unwrap(),
        bytes,
        "the damaged table was not rebuilt"
    );
    restored_same(&env, &first, &src, "r2");

    // Another repository's table in this one's place: not opened (its hash is keyed).
    let other = Env::new();
    let other_src = other.path("src");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("x"), noise(1 << 20, 3)).unwrap();
    other.ok(&["backup", other_src.to_str().unwrap()]);
    other.ok(&["backup", other_src.to_str().unwrap()]);
    std::fs::copy(table_of(&other), &table).unwrap();
    let out = env.run(&["backup", s]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hash does not match"));
    restored_same(&env, &first, &src, "r3");

    // Stale: a table from before a prune names packs the prune deleted. Believed, the backup
    // below would take `dropped` as stored and save a snapshot that cannot be restored.
    let before_prune = std::fs::read(&table).unwrap();
    std::fs::remove_file(src.join("dropped")).unwrap();
    let only_kept = env.json(&["backup", s])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["forget", "--keep-last", "1"]);
    // Marks, deletes, then retires the mark that named the deleted packs (from then on only the
    // index tells what is stored). The backups wrote both files' chunks in parallel, so a pack
    // may hold some of each: repacking every pack with any unused byte makes sure no chunk of
    // `dropped` stays stored (the default 25 % left one in a pack mostly `kept`'s, and the backup
    // below rightly reused it). The second and third prunes repack nothing (a pack wholly used
    // is never repacked), or a mark would be left.
    for _ in 0..3 {
        env.ok(&["prune", "--grace", "0s", "--repack-unused", "0"]);
    }
    assert!(
        env.objects("prune").is_empty(),
        "a prune mark is left: {:?}",
        env.objects("prune")
    );
    std::fs::write(&table, &before_prune).unwrap();
    std::fs::write(src.join("dropped"), noise(3 << 20, 2)).unwrap();
    settle();
    let again = env.json(&["backup", s]);
    assert!(
        again["bytes_added"].as_u64().unwrap() >= 3 << 20,
        "the backup after the prune did not store `dropped` again: {again}"
    );
    let latest = again["snapshot"].as_str().unwrap().to_string();
    restored_same(&env, &latest, &src, "r4");
    env.ok(&["check", "--read-data"]);
    assert_ne!(only_kept, latest);
}
