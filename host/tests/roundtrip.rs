//! Round trip: a tree with every case restore must reproduce comes back identical, content and
//! metadata; an unchanged tree backs up again without reading a byte.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

on_each_store!(
    restore_reproduces_every_kind_of_entry,
    unchanged_tree_reads_no_bytes,
    include_restores_only_the_named_part,
);

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// Builds the fidelity tree: every file type, odd modes, times, owners, links and names.
fn build_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::write(root.join("plain.txt"), b"hello coffer\n").unwrap();
    std::fs::write(root.join("sub/noise.bin"), noise(3_000_000, 5)).unwrap();
    std::fs::write(root.join("sub/deeper/empty-file"), b"").unwrap();
    std::fs::write(root.join("sub/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("sub/script.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(root.join("secret"), b"s3cr3t").unwrap();
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Names that are not UTF-8, and odd but legal ones.
    let latin1 = root.join(OsStr::from_bytes(b"caf\xe9-\xff.txt"));
    std::fs::write(&latin1, b"latin-1 name").unwrap();
    std::fs::write(root.join("with space & 'quote'\n newline"), b"x").unwrap();
    // Symlinks: relative, dangling, to a folder, and with a non-UTF-8 target.
    std::os::unix::fs::symlink("plain.txt", root.join("link-to-plain")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("sub/deeper", root.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"caf\xe9-\xff.txt"),
        root.join("link-latin1"),
    )
    .unwrap();
    // Hard links: three names, one inode.
    std::fs::write(root.join("sub/hard-a"), noise(100_000, 9)).unwrap();
    std::fs::hard_link(root.join("sub/hard-a"), root.join("sub/hard-b")).unwrap();
    std::fs::hard_link(root.join("sub/hard-a"), root.join("hard-c")).unwrap();
    // A FIFO.
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // A file over 4 GiB, sparse, with data at both ends and past the 4 GiB mark.
    let big = std::fs::File::create(root.join("big.sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    big.write_all_at(b"start", 0).unwrap();
    big.write_all_at(b"past four gibibytes", (4u64 << 30) + 12345)
        .unwrap();
    big.set_len((4u64 << 30) + 1_000_000).unwrap();
    drop(big);
    // Owners (only root may give files away).
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(root.join("plain.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link-to-plain"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::lchown(root.join("sub"), Some(99), Some(100)).unwrap();
    }
    // Times: whole seconds, nanoseconds, before 1970, and on symlinks and folders.
    set_mtime(&root.join("plain.txt"), 1_000_000_000, 123_456_789);
    set_mtime(&latin1, -86_400, 0);
    set_mtime(&root.join("link-to-plain"), 1_500_000_000, 42);
    set_mtime(&root.join("sub/deeper"), 1_600_000_000, 7);
    set_mtime(&root.join("empty"), 1_234_567_890, 0);
}

fn restore_reproduces_every_kind_of_entry(env: Env) {
    env.ok(&["init"]);
    let src = env.path("src");
    build_tree(&src);
    let before = manifest(&src);
    let out = env.backup(&src);
    assert!(out["bytes_read"].as_u64().unwrap() > (4u64 << 30), "{out}");
    // The sparse 4 GiB of zeros deduplicates to almost nothing.
    assert!(out["bytes_added"].as_u64().unwrap() < 20 << 20, "{out}");
    let restored = env.restore(out["snapshot"].as_str().unwrap(), "src");
    assert_same(&before, &manifest(&restored));
    assert_eq!(before, manifest(&src), "backup changed its source");
}

fn unchanged_tree_reads_no_bytes(env: Env) {
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..200 {
        std::fs::write(
            src.join(format!("a/b/f{i}")),
            noise(10_000 + i * 100, i as u64),
        )
        .unwrap();
    }
    std::fs::write(src.join("a/big"), noise(5_000_000, 77)).unwrap();
    settle();
    let first = env.backup(&src);
    assert_eq!(first["files_new"], 201);
    let second = env.backup(&src);
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_unchanged"], 201);
    assert_eq!(second["files_new"], 0);
    // Nothing new is stored but the snapshot itself: trees dedup too.
    assert_eq!(second["chunks_added"], 0, "{second}");
    // One changed file is read again, and only it.
    std::fs::write(src.join("a/b/f3"), b"changed").unwrap();
    settle();
    let third = env.backup(&src);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["bytes_read"], 7);
    let restored = env.restore(third["snapshot"].as_str().unwrap(), "src");
    assert_same(&manifest(&src), &manifest(&restored));
}

fn include_restores_only_the_named_part(env: Env) {
    env.ok(&["init"]);
    let src = env.path("app");
    std::fs::create_dir_all(src.join("data/db")).unwrap();
    std::fs::create_dir_all(src.join("static")).unwrap();
    std::fs::write(src.join("data/db/main.db"), noise(50_000, 1)).unwrap();
    std::fs::write(src.join("static/logo.png"), noise(20_000, 2)).unwrap();
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let target = env.path("partial");
    env.ok(&[
        "restore",
        &snap,
        "--target",
        target.to_str().unwrap(),
        "--include",
        "app/data",
    ]);
    assert_eq!(
        hash_file(&target.join("app/data/db/main.db")),
        hash_file(&src.join("data/db/main.db"))
    );
    assert!(!target.join("app/static").exists());
    // ls and diff see the same snapshot.
    let ls = env.ok(&["ls", &snap]);
    assert!(ls.lines().any(|l| l == "app/static/logo.png"), "{ls}");
    std::fs::write(src.join("static/new.css"), b"body{}").unwrap();
    let snap2 = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let diff = env.ok(&["diff", &snap, &snap2]);
    assert!(diff.lines().any(|l| l == "+ app/static/new.css"), "{diff}");
}
