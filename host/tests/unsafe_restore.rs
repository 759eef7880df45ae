//! Crafted snapshots that try to write outside the restore target are refused, and nothing is
//! written outside `--target` (nor, for a refused plan, inside it).

mod common;

use coffer_repo::crypto::Tag;
use coffer_repo::snapshot::Snapshot;
use coffer_repo::tree::{Node, NodeKind, Tree};
use coffer_repo::Repository;
use common::*;

const UNSAFE: i32 = 14;

fn file(name: &str, content: coffer_repo::id::ChunkId, size: u64) -> Node {
    let mut n = Node::new(NodeKind::File);
    n.name = name.into();
    n.mode = 0o644;
    n.content = vec![content];
    n.size = size;
    n
}

/// Stores a snapshot whose root folder `top` holds `nodes`, exactly as given.
fn crafted(repo: &Repository, nodes: Vec<Node>) -> String {
    let (index, _) = repo.load_index().unwrap();
    let inner = Tree { nodes };
    let inner_id = repo
        .store_chunks(&index, &[(Tag::Tree, inner.to_bytes())])
        .unwrap()[0];
    let mut top = Node::new(NodeKind::Dir);
    top.name = "top".into();
    top.mode = 0o755;
    top.subtree = Some(inner_id);
    let root = Tree { nodes: vec![top] };
    let (index, _) = repo.load_index().unwrap();
    let root_id = repo
        .store_chunks(&index, &[(Tag::Tree, root.to_bytes())])
        .unwrap()[0];
    let snap = Snapshot {
        program_version: "crafted".into(),
        ..Snapshot::new(
            chrono::Utc::now(),
            "evil".into(),
            vec!["/top".into()],
            root_id,
        )
    };
    repo.save_snapshot(&snap).unwrap().to_hex()
}

#[test]
fn entries_that_escape_the_target_are_refused() {
    let env = Env::new();
    let repo = env.open_repo();
    let (index, _) = repo.load_index().unwrap();
    let payload = b"owned".to_vec();
    let content = repo
        .store_chunks(&index, &[(Tag::Data, payload.clone())])
        .unwrap()[0];
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let evil_abs = outside.join("abs").to_str().unwrap().to_string();

    let mut cases: Vec<(&str, Vec<Node>)> = vec![
        ("dotdot", vec![file("..", content, 5)]),
        ("dotdot-slash", vec![file("../../outside/x", content, 5)]),
        ("absolute", vec![file(&evil_abs, content, 5)]),
        ("dot", vec![file(".", content, 5)]),
    ];
    let mut link = Node::new(NodeKind::Symlink);
    link.name = "escape".into();
    link.set_target(outside.as_os_str());
    // Symlinks leaving the target are data: restored as they were, never followed.
    let mut rel_link = link.clone();
    rel_link.set_target(std::ffi::OsStr::new("../../outside"));
    let links = vec![
        (
            "absolute-symlink",
            vec![link.clone(), file("ok", content, 5)],
        ),
        ("relative-symlink", vec![rel_link]),
    ];
    // A symlink and a folder of the same name: writing into the folder would follow the link.
    let mut dir = Node::new(NodeKind::Dir);
    dir.name = "escape".into();
    dir.subtree = Some(
        repo.store_chunks(
            &index,
            &[(
                Tag::Tree,
                Tree {
                    nodes: vec![file("x", content, 5)],
                }
                .to_bytes(),
            )],
        )
        .unwrap()[0],
    );
    let mut inside_link = link.clone();
    inside_link.set_target(std::ffi::OsStr::new("."));
    cases.push(("duplicate-name", vec![inside_link, dir]));

    for (label, nodes) in cases {
        let snap = crafted(&repo, nodes);
        let target = env.path(&format!("target-{label}"));
        let err = env.fails(
            &["restore", &snap, "--target", target.to_str().unwrap()],
            UNSAFE,
        );
        assert!(err.contains("refusing to restore"), "{label}: {err}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{label}: wrote outside the target"
        );
        assert!(
            !target.join("top").exists(),
            "{label}: a refused plan wrote into the target"
        );
    }
    for (label, nodes) in links {
        let snap = crafted(&repo, nodes);
        let target = env.path(&format!("target-{label}"));
        env.ok(&["restore", &snap, "--target", target.to_str().unwrap()]);
        assert!(target.join("top/escape").is_symlink(), "{label}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{label}: wrote outside the target"
        );
        // The opt-in leaves them out.
        let skipped = env.path(&format!("skipped-{label}"));
        env.ok(&[
            "restore",
            &snap,
            "--target",
            skipped.to_str().unwrap(),
            "--skip-outside-symlinks",
        ]);
        assert!(!skipped.join("top/escape").is_symlink(), "{label}");
    }
}

#[test]
fn an_existing_symlink_in_the_target_is_not_followed() {
    let env = Env::new();
    let src = env.path("app");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("data/db"), b"database").unwrap();
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = env.path("target");
    std::fs::create_dir_all(target.join("app")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("app/data")).unwrap();
    let err = env.fails(
        &["restore", &snap, "--target", target.to_str().unwrap()],
        UNSAFE,
    );
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}
