//! S3 repositories on a real Garage server: the storage conformance suite, offsite copies in
//! both directions, and damage found on the bucket.

mod common;

use common::*;

#[test]
fn s3_backend_conforms() {
    let env = Env::s3_uninit(coffer_testkit::Garage::shared());
    // Parts of 5 MiB from 5 MiB up, so the suite's 12 MiB object goes up in three parts.
    let cfg = coffer::backend::S3Config {
        multipart_threshold_mib: Some(5),
        part_size_mib: Some(5),
        ..env.s3_config()
    };
    let b = coffer::backend::open(&env.location, true, &cfg).unwrap();
    coffer::backend::conformance::run(b.as_ref());
}

/// Local → S3 of 10 snapshots, again (nothing copied), restores from the copy identical, and
/// S3 → a second local repository with its own key.
#[test]
fn copy_local_to_s3_and_back() {
    let local = Env::new();
    let mut offsite = Env::s3_uninit(coffer_testkit::Garage::shared());
    offsite.password = "offsite passphrase".into();
    offsite.ok(&["init"]);
    let data = local.path("data");
    std::fs::create_dir(&data).unwrap();
    let mut snaps = vec![];
    for day in 0..10u64 {
        std::fs::write(
            data.join(format!("day{day}.bin")),
            noise(600_000, 301 + 2 * day),
        )
        .unwrap();
        std::fs::write(
            data.join("db.sql"),
            format!("row {day}\n").repeat(5000 + day as usize),
        )
        .unwrap();
        let out = local.backup(&data);
        snaps.push((
            out["snapshot"].as_str().unwrap().to_string(),
            manifest(&data),
        ));
    }
    let copy = |from: &Env, to: &Env| {
        let mut c = from.cmd(&["--json", "copy", "--to", &to.location]);
        c.env("COFFER_TO_PASSWORD", &to.password)
            .envs(to.extra_env.iter().cloned());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = copy(&local, &offsite);
    assert_eq!(first["copied"].as_array().unwrap().len(), 10, "{first}");
    assert!(
        first["bytes_added"].as_u64().unwrap() > 6_000_000,
        "{first}"
    );
    let again = copy(&local, &offsite);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"], 10);
    assert_eq!(again["bytes_added"], 0);
    offsite.ok(&["check", "--read-data"]);
    for ((orig, before), pair) in snaps.iter().zip(first["copied"].as_array().unwrap()) {
        assert_eq!(pair[0].as_str().unwrap(), orig);
        let restored = offsite.restore(pair[1].as_str().unwrap(), "data");
        assert_same(before, &manifest(&restored));
    }

    // S3 → local: a fresh repository with another key receives the latest snapshot.
    let mut home = Env::uninit();
    home.password = "third passphrase".into();
    home.ok(&["init"]);
    let mut c = offsite.cmd(&["--json", "copy", "--to", &home.location, "latest"]);
    c.env("COFFER_TO_PASSWORD", &home.password);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copied = back["copied"][0][1].as_str().unwrap().to_string();
    let restored = home.restore(&copied, "data");
    assert_same(&snaps[9].1, &manifest(&restored));
}
