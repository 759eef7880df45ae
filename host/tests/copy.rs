//! `coffer copy`: snapshots move between repositories with different keys without re-chunking,
//! only what the destination lacks; running it again copies nothing; copies restore identical.

mod common;

use common::*;

#[test]
fn copy_moves_only_what_is_missing_and_restores_identical() {
    let src_env = Env::new();
    let dst_env = Env {
        password: "another passphrase".into(),
        ..Env::uninit()
    };
    dst_env.ok(&["init"]);
    let data = src_env.path("data");
    std::fs::create_dir(&data).unwrap();
    let mut snaps = vec![];
    for i in 0..3u64 {
        std::fs::write(
            data.join(format!("f{i}.bin")),
            noise(2_000_000, 101 + 2 * i),
        )
        .unwrap();
        std::fs::write(data.join("log.txt"), format!("day {i}\n").repeat(1000)).unwrap();
        snaps.push((
            src_env.backup(&data)["snapshot"]
                .as_str()
                .unwrap()
                .to_string(),
            manifest(&data),
        ));
    }
    let first = copy_to(&src_env, &dst_env, &[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 3, "{first}");
    // Three 2 MB files of noise and a little text: about 6 MB, each chunk sent once.
    let added = first["bytes_added"].as_u64().unwrap();
    assert!(added > 6_000_000 && added < 6_500_000, "{first}");
    let again = copy_to(&src_env, &dst_env, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"], 3);
    assert_eq!(again["bytes_added"], 0);
    // Nor does copying back: the copies know where they came from.
    let back = copy_to(&dst_env, &src_env, &[]);
    assert_eq!(back["copied"].as_array().unwrap().len(), 0, "{back}");

    dst_env.ok(&["check", "--read-data"]);
    let copies = dst_env.json(&["snapshots"]);
    for ((orig, before), (_, copied)) in snaps.iter().zip(
        first["copied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].clone(), p[1].clone())),
    ) {
        let c = copies
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == copied)
            .unwrap();
        assert!(
            c["original"].as_str().unwrap().ends_with(orig.as_str()),
            "{c}"
        );
        let restored = dst_env.restore(copied.as_str().unwrap(), "data");
        assert_same(before, &manifest(&restored));
    }
}
