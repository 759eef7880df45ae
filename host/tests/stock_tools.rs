//! The format stays readable without coffer: the stock `age` and `zstd` tools (Debian packages
//! `age` and `zstd`) decrypt and decompress a pack to the original bytes, as docs/FORMAT.md says.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn age_and_zstd_recover_a_pack() {
    assert!(
        tool("age") && tool("zstd"),
        "the age and zstd tools are needed: apt-get install age zstd (.ci/run does)"
    );
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    // One compressible file and one that is stored raw: both must come out of `zstd -d`.
    let text = b"INSERT INTO t VALUES (1, 'stock tools can read this');\n".repeat(20_000);
    let random = noise(700_000, 3);
    std::fs::write(src.join("a.sql"), &text).unwrap();
    std::fs::write(src.join("b.bin"), &random).unwrap();
    env.backup(&src);
    let identity = env.path("data.key");
    let out = env
        .cmd(&["key", "export-identity", "data"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&identity, &out.stdout).unwrap();
    let mut recovered = vec![];
    for pack in env.objects("data") {
        let mut age = Command::new("age")
            .args([
                "-d",
                "-i",
                identity.to_str().unwrap(),
                pack.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let z = Command::new("zstd")
            .args(["-d", "-c"])
            .stdin(age.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            age.wait().unwrap().success(),
            "age -d failed on {}",
            pack.display()
        );
        assert!(
            z.status.success(),
            "zstd -d failed: {}",
            String::from_utf8_lossy(&z.stderr)
        );
        recovered.extend(z.stdout);
    }
    // A file's chunks may sit in different packs (parallel uploaders each fill their own), and
    // packs are read here in name order: find the file as consecutive pieces, each found by its
    // first KiB and followed as far as it matches.
    let find = |needle: &[u8]| {
        let mut rest = needle;
        while !rest.is_empty() {
            let head = &rest[..rest.len().min(1024)];
            let Some(at) = recovered.windows(head.len()).position(|w| w == head) else {
                return false;
            };
            let n = recovered[at..]
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            rest = &rest[n..];
        }
        true
    };
    assert!(
        find(&text),
        "the SQL file's bytes are not in the decrypted packs"
    );
    assert!(
        find(&random),
        "the raw-stored file's bytes are not in the decrypted packs"
    );
    // The key file's secrets are an armored age file too.
    let key = &env.objects("keys")[0];
    let kf: serde_json::Value = serde_json::from_slice(&std::fs::read(key).unwrap()).unwrap();
    assert!(kf["secrets"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
}
