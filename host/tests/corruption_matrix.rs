//! The corruption matrix: every kind of object (config, key file, data pack, tree pack, index
//! object, snapshot) damaged every way (a byte flipped at its start, middle and end; cut to 0,
//! to half and to one byte short; a byte appended; deleted; replaced by another object of its
//! kind). After each: nothing wrong is written by a restore, the damaged object is named, and
//! every file it does not hold restores identical.
//!
//! "Rolled back to an older copy" is the swap: coffer never writes an object twice (each is
//! named by its content's hash), so an older copy under an object's name is either the same
//! bytes (no damage) or another object's content.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coffer_repo::crypto::Tag;
use coffer_repo::id::{ChunkId, PackId};
use common::*;

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipStart,
    FlipMiddle,
    FlipEnd,
    CutToZero,
    CutToHalf,
    CutOneShort,
    Append,
    Delete,
    SwapWithAnother,
}

const ALL: [Damage; 9] = [
    Damage::FlipStart,
    Damage::FlipMiddle,
    Damage::FlipEnd,
    Damage::CutToZero,
    Damage::CutToHalf,
    Damage::CutOneShort,
    Damage::Append,
    Damage::Delete,
    Damage::SwapWithAnother,
];

fn damage(file: &Path, how: Damage, other: Option<&Path>) -> bool {
    let mut b = std::fs::read(file).unwrap();
    match how {
        Damage::FlipStart => b[0] ^= 0x01,
        Damage::FlipMiddle => {
            let m = b.len() / 2;
            b[m] ^= 0x20;
        }
        Damage::FlipEnd => {
            let e = b.len() - 1;
            b[e] ^= 0x80;
        }
        Damage::CutToZero => b.clear(),
        Damage::CutToHalf => b.truncate(b.len() / 2),
        Damage::CutOneShort => {
            b.pop();
        }
        Damage::Append => b.push(b'x'),
        Damage::Delete => {
            std::fs::remove_file(file).unwrap();
            return true;
        }
        Damage::SwapWithAnother => match other {
            Some(o) => b = std::fs::read(o).unwrap(),
            None => return false,
        },
    }
    std::fs::write(file, b).unwrap();
    true
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Files of a folder, by path below it, with their content hash.
fn files(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, hash_file(&p));
            }
        }
    }
    out
}

/// The pristine repository: two snapshots, small packs, two full keys.
struct Pristine {
    env: Env,
    src_a: PathBuf,
    src_b: PathBuf,
    snaps: [String; 2],
    /// Per snapshot: file path (below the restore target) -> its chunks.
    chunks: [BTreeMap<String, Vec<ChunkId>>; 2],
}

fn pristine() -> Pristine {
    let env = Env::uninit();
    env.ok(&["init", "--pack-size", "1"]);
    env.add_key("a second passphrase", &[]);
    let src_a = env.path("a");
    std::fs::create_dir_all(src_a.join("sub")).unwrap();
    for i in 0..5 {
        std::fs::write(src_a.join(format!("f{i}")), noise(500_000, 300 + i)).unwrap();
    }
    std::fs::write(src_a.join("sub/g"), noise(300_000, 399)).unwrap();
    let src_b = env.path("b");
    std::fs::create_dir_all(&src_b).unwrap();
    std::fs::write(src_b.join("h"), noise(700_000, 400)).unwrap();
    let a = env.backup(&src_a)["snapshot"].as_str().unwrap().to_string();
    let b = env.backup(&src_b)["snapshot"].as_str().unwrap().to_string();
    let repo = env.open_repo();
    let chunks = [&a, &b].map(|s| files_of(&repo, s));
    Pristine {
        env,
        src_a,
        src_b,
        snaps: [a, b],
        chunks,
    }
}

/// One case: a copy of the pristine repository with `object` damaged `how`.
struct Case<'a> {
    p: &'a Pristine,
    env: Env,
    label: String,
}

impl<'a> Case<'a> {
    fn new(p: &'a Pristine, kind: &str, how: Damage) -> Case<'a> {
        let env = Env::uninit();
        copy_dir(&p.env.repo, &env.repo);
        Case {
            p,
            env,
            label: format!("{kind} {how:?}"),
        }
    }

    fn file(&self, key: &str) -> PathBuf {
        self.env.repo.join(key)
    }

    /// Restores snapshot `n`; asserts nothing wrong was written and no temporary file left;
    /// returns the restored files and the command's stderr.
    fn restore(&self, n: usize) -> (BTreeMap<String, String>, String, Option<i32>) {
        let target = self.env.path(&format!("restore-{n}-{}", rand_suffix()));
        let out = self.env.run(&[
            "restore",
            &self.p.snaps[n],
            "--target",
            target.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{}: {stderr}", self.label);
        let got = files(&target);
        let src = [&self.p.src_a, &self.p.src_b][n];
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        for (rel, hash) in &got {
            assert!(
                !rel.contains(".coffer-restore"),
                "{}: temporary file {rel} left",
                self.label
            );
            let inner = rel.strip_prefix(&format!("{name}/")).unwrap_or(rel);
            assert_eq!(
                &hash_file(&src.join(inner)),
                hash,
                "{}: {rel} restored with wrong content",
                self.label
            );
        }
        (got, stderr, out.status.code())
    }

    /// Files of snapshot `n` none of whose chunks lie in `packs`.
    fn untouched(&self, n: usize, packs: &[PackId]) -> Vec<String> {
        let repo = self.p.env.open_repo();
        let (index, _) = repo.load_index().unwrap();
        self.p.chunks[n]
            .iter()
            .filter(|(_, cs)| {
                cs.iter()
                    .all(|c| index.get(c).is_none_or(|(p, _)| !packs.contains(&p)))
            })
            .map(|(f, _)| f.clone())
            .collect()
    }

    fn check_names(&self, object: &str) {
        let out = self.env.run(&["--json", "check", "--read-data"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{}: check passed", self.label);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", self.label);
        assert!(
            stdout.contains(object) || stderr.contains(object),
            "{}: check does not name {object}: {stdout} {stderr}",
            self.label
        );
    }
}

fn objects(env: &Env, prefix: &str) -> Vec<String> {
    env.objects(prefix)
        .into_iter()
        .map(|p| p.strip_prefix(&env.repo).unwrap().display().to_string())
        .collect()
}

#[test]
fn every_object_damaged_every_way_is_named_and_costs_only_what_it_holds() {
    let p = pristine();
    let repo = p.env.open_repo();
    let (files_idx, _) = repo.load_index_files().unwrap();
    let packs: Vec<(PackId, bool)> = files_idx
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .map(|pk| (pk.id, pk.chunks.iter().any(|c| c.tag == Tag::Tree)))
        .collect();
    let data_packs: Vec<PackId> = packs
        .iter()
        .filter(|(_, t)| !t)
        .map(|(id, _)| *id)
        .collect();
    let tree_packs: Vec<PackId> = packs
        .iter()
        .filter(|(_, t)| *t)
        .map(|(id, _)| *id)
        .collect();
    assert!(data_packs.len() >= 3 && tree_packs.len() >= 2, "{packs:?}");
    let all_restore = [files(&p.src_a).len(), files(&p.src_b).len()];
    let mut cases = 0;

    // ----- config -----
    for how in ALL {
        let c = Case::new(&p, "config", how);
        if !damage(&c.file("config"), how, None) {
            continue;
        }
        cases += 1;
        let out = c.env.run(&["snapshots"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: opened", c.label);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", c.label);
        assert!(
            stderr.contains("config")
                || stderr.contains("no coffer repository")
                || stderr.contains("another repository"),
            "{}: {stderr}",
            c.label
        );
    }

    // ----- key files: the damaged one is named; the other key opens everything -----
    let keys = objects(&p.env, "keys");
    assert_eq!(keys.len(), 2);
    for how in ALL {
        for (k, key) in keys.iter().enumerate() {
            let c = Case::new(&p, "key", how);
            let other = c.file(&keys[1 - k]);
            if !damage(&c.file(key), how, Some(&other)) {
                continue;
            }
            cases += 1;
            // One of the two passphrases no longer opens; the other always does.
            let mut second = Env {
                password: "a second passphrase".into(),
                ..Env::uninit()
            };
            second.location = c.env.location.clone();
            second.repo = c.env.repo.clone();
            let first_ok = c.env.run(&["snapshots"]).status.success();
            let second_ok = second.run(&["snapshots"]).status.success();
            assert!(first_ok != second_ok, "{}: {first_ok} {second_ok}", c.label);
            let works = if first_ok { &c.env } else { &second };
            let fails = if first_ok { &second } else { &c.env };
            let stderr = String::from_utf8_lossy(&fails.run(&["snapshots"]).stderr).into_owned();
            assert!(!stderr.contains("panicked"), "{}: {stderr}", c.label);
            let target = works.path("t");
            works.ok(&["restore", &p.snaps[0], "--target", target.to_str().unwrap()]);
            assert_eq!(files(&target).len(), all_restore[0], "{}", c.label);
        }
    }

    // ----- data packs and tree packs -----
    for (kind, list) in [("data pack", &data_packs), ("tree pack", &tree_packs)] {
        for how in ALL {
            let victim = list[0];
            let c = Case::new(&p, kind, how);
            let key = coffer_repo::pack::key(&victim);
            let other = c.file(&coffer_repo::pack::key(&list[1]));
            if !damage(&c.file(&key), how, Some(&other)) {
                continue;
            }
            cases += 1;
            c.check_names(&victim.to_hex()[..16]);
            for (n, whole) in all_restore.iter().enumerate() {
                let (got, stderr, code) = c.restore(n);
                if kind == "data pack" {
                    for f in c.untouched(n, &[victim]) {
                        assert!(
                            got.contains_key(&f),
                            "{}: unaffected {f} not restored: {stderr}",
                            c.label
                        );
                    }
                    if got.len() < *whole {
                        assert_eq!(code, Some(13), "{}: {stderr}", c.label);
                    }
                } else if got.len() < *whole {
                    assert!(code != Some(0), "{}: restore said ok: {stderr}", c.label);
                }
            }
        }
    }

    // ----- index objects: named, and `repair index` gets everything back -----
    let index_objects = objects(&p.env, "index");
    assert!(index_objects.len() >= 2);
    for how in ALL {
        let c = Case::new(&p, "index", how);
        let other = c.file(&index_objects[1]);
        if !damage(&c.file(&index_objects[0]), how, Some(&other)) {
            continue;
        }
        cases += 1;
        let name = Path::new(&index_objects[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !matches!(how, Damage::Delete) {
            c.check_names(&name[..16]);
        }
        for n in 0..2 {
            c.restore(n);
        }
        c.env.ok(&["repair", "index"]);
        c.env.ok(&["check", "--read-data"]);
        for (n, whole) in all_restore.iter().enumerate() {
            let (got, stderr, _) = c.restore(n);
            assert_eq!(got.len(), *whole, "{}: after repair: {stderr}", c.label);
        }
    }

    // ----- snapshots: the damaged one is named, the other restores whole -----
    let snapshot_objects = objects(&p.env, "snapshots");
    for how in ALL {
        let c = Case::new(&p, "snapshot", how);
        let victim = snapshot_objects
            .iter()
            .position(|o| o.contains(&p.snaps[0]))
            .unwrap();
        let other = c.file(&snapshot_objects[1 - victim]);
        if !damage(&c.file(&snapshot_objects[victim]), how, Some(&other)) {
            continue;
        }
        cases += 1;
        if !matches!(how, Damage::Delete) {
            c.check_names(&p.snaps[0][..8]);
        }
        let (got, stderr, code) = c.restore(0);
        assert!(got.is_empty() && code != Some(0), "{}: {stderr}", c.label);
        let (got, stderr, _) = c.restore(1);
        assert_eq!(got.len(), all_restore[1], "{}: {stderr}", c.label);
    }
    eprintln!("corruption matrix: {cases} cases");
    assert!(cases >= 60, "{cases}");
}
