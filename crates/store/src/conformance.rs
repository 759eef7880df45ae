//! The storage conformance suite: every backend must pass it.

use crate::{parallel_map, Backend, BackendError};

pub fn run(b: &dyn Backend) {
    assert!(matches!(
        b.get("index/nope"),
        Err(BackendError::NotFound { .. })
    ));
    assert!(!b.exists("index/nope").unwrap());
    b.put("index/aa", b"hello".to_vec()).unwrap();
    b.put("data/00/bb", vec![1, 2, 3, 4, 5]).unwrap();
    b.put("data/01/cc", vec![9; 10]).unwrap();
    assert_eq!(&b.get("index/aa").unwrap()[..], b"hello");
    assert_eq!(&b.get_range("data/00/bb", 1..3).unwrap()[..], [2, 3]);
    let mut buf = vec![7; 3];
    b.get_into("data/01/cc", &mut buf).unwrap();
    assert_eq!(buf, vec![9; 10]);
    assert!(matches!(
        b.get_into("data/01/nope", &mut buf),
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(b.head("data/01/cc").unwrap(), 10);
    let mut keys: Vec<_> = b
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["data/00/bb", "data/01/cc"]);
    assert!(b.list("snapshots/").unwrap().is_empty());
    // Writing the same object twice is harmless: objects are named after their content.
    b.put("index/aa", b"hello".to_vec()).unwrap();
    b.delete("index/aa").unwrap();
    b.delete("index/aa").unwrap();
    assert!(!b.exists("index/aa").unwrap());

    // Listings and HEAD carry the store's modification time; the store clock agrees with it.
    let listed = b.list("data/00/").unwrap();
    let stat = b.stat("data/00/bb").unwrap();
    assert_eq!(stat.size, 5);
    let (Some(listed_t), Some(stat_t)) = (listed[0].modified, stat.modified) else {
        panic!("no modification time from {}", b.location());
    };
    assert!((listed_t - stat_t).num_seconds().abs() <= 1);
    let now = b.now().unwrap();
    assert!(
        now >= stat_t - chrono::Duration::seconds(1),
        "{now} < {stat_t}"
    );
    assert!((now - chrono::Utc::now()).num_minutes().abs() < 10);
    assert!(
        b.list("clock/").unwrap().is_empty(),
        "the clock probe is removed"
    );

    // A pack-sized object (multipart on stores that split big uploads), read whole and in part.
    let big: Vec<u8> = (0..(12u32 << 20))
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    b.put("data/02/big", big.clone()).unwrap();
    assert_eq!(b.head("data/02/big").unwrap(), big.len() as u64);
    assert!(b.get("data/02/big").unwrap() == big);
    let r = (5 << 20) - 3..(6 << 20) + 11;
    assert_eq!(
        &b.get_range("data/02/big", r.start as u64..r.end as u64)
            .unwrap()[..],
        &big[r]
    );
    b.delete("data/02/big").unwrap();

    // A deferred put (a pack) is readable and listed at once, alone under its name, and made
    // durable by naming it; naming objects never deferred, or missing, is harmless.
    let packs: Vec<String> = (0..70)
        .map(|i| format!("data/{i:02x}/deferred{i}"))
        .collect();
    for (i, k) in packs.iter().enumerate() {
        b.put_deferred(k, bytes::Bytes::from(vec![i as u8; 1000 + i]))
            .unwrap();
    }
    assert_eq!(&b.get(&packs[69]).unwrap()[..], &vec![69u8; 1069][..]);
    assert_eq!(b.head(&packs[3]).unwrap(), 1003);
    let listed = b.list("data/").unwrap();
    assert_eq!(listed.len(), 2 + packs.len(), "{listed:?}");
    b.sync(&packs[..8]).unwrap();
    b.sync(&["data/00/bb".into(), "data/ff/nope".into()])
        .unwrap();
    b.sync(&packs).unwrap();
    for k in &packs {
        b.delete(k).unwrap();
    }

    // Listings page through more than one response's worth (S3 returns 1000 keys at a time).
    let keys: Vec<String> = (0..1100)
        .map(|i| format!("paging/{:02x}/{i}", i % 7))
        .collect();
    parallel_map(&keys, |k| b.put(k, vec![1]).unwrap());
    assert_eq!(b.list("paging/").unwrap().len(), 1100);
    assert_eq!(b.list("paging/03/").unwrap().len(), 157);
    parallel_map(&keys, |k| b.delete(k).unwrap());
    assert!(b.list("paging/").unwrap().is_empty());
    for k in ["data/00/bb", "data/01/cc"] {
        b.delete(k).unwrap();
    }
}

#[test]
fn memory_backend_conforms() {
    run(&crate::StoreBackend::memory());
}

#[test]
fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    run(&crate::StoreBackend::local(&root, true).unwrap());
    // No staged file is left behind by a deferred put.
    let mut left = vec![];
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                left.push(e.path());
            }
        }
    }
    assert!(left.is_empty(), "{left:?}");
}
