//! `coffer forget`: a policy removes exactly the snapshots it does not keep, per group, says
//! which rule keeps each survivor, and --dry-run removes nothing.

mod common;

use common::*;

#[test]
fn forget_keeps_what_the_policy_keeps() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut a_snaps = vec![];
    for i in 0..5 {
        std::fs::write(a.join("f"), format!("version {i}")).unwrap();
        a_snaps.push(env.backup(&a)["snapshot"].as_str().unwrap().to_string());
    }
    let b_snap = env.backup(&b)["snapshot"].as_str().unwrap().to_string();

    let dry = env.json(&["forget", "--keep-last", "2", "--dry-run"]);
    let groups = dry["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{dry}");
    let ga = groups
        .iter()
        .find(|g| g["group"].as_str().unwrap().ends_with("/a"))
        .unwrap();
    let removed: Vec<&str> = ga["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 3);
    for old in &a_snaps[..3] {
        assert!(removed.contains(&old.as_str()), "{dry}");
    }
    // Oldest first: the newest snapshot is kept as "last 1".
    assert_eq!(ga["keep"][1]["id"], a_snaps[4].as_str(), "{dry}");
    assert_eq!(
        ga["keep"][1]["reasons"],
        serde_json::json!(["last 1"]),
        "{dry}"
    );
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        6,
        "dry run removed something"
    );

    let done = env.json(&["forget", "--keep-last", "2"]);
    assert_eq!(done["removed"], 3);
    let left: Vec<String> = env
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![a_snaps[3].clone(), a_snaps[4].clone(), b_snap];
    want.sort();
    let mut left = left;
    left.sort();
    assert_eq!(left, want);
    // The survivors restore, and the repository is sound.
    let restored = env.restore(&a_snaps[4], "a");
    assert_eq!(
        std::fs::read_to_string(restored.join("f")).unwrap(),
        "version 4"
    );
    env.ok(&["check", "--read-data"]);
    // A policy is required.
    let err = env.fails(&["forget"], 1);
    assert!(err.contains("no retention policy"), "{err}");
}
