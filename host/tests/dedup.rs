//! Deduplication that survives shifting: rows inserted into the middle of a ~200 MiB SQL dump
//! and appended at its end cost about the changed bytes, not the rest of the file.

mod common;

use common::*;

/// A plain-SQL dump of `rows` rows, like `pg_dump --inserts` writes.
fn dump(rows: std::ops::Range<u64>, extra: &[(u64, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(220 << 20);
    out.extend_from_slice(b"-- PostgreSQL database dump\nCREATE TABLE messages (id bigint, customer text, body text);\n");
    let words = [
        "hello",
        "order",
        "refund",
        "thanks",
        "shipping",
        "price",
        "when",
        "available",
        "colour",
        "size",
    ];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in rows {
        for (at, line) in extra {
            if *at == i {
                out.extend_from_slice(line.as_bytes());
            }
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let body: Vec<&str> = (0..10)
            .map(|k| words[((x >> (k * 5)) % 10) as usize])
            .collect();
        out.extend_from_slice(
            format!(
                "INSERT INTO messages VALUES ({i}, 'customer-{}', '{} {:016x}');\n",
                x % 5000,
                body.join(" "),
                x
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn inserted_rows_cost_about_the_changed_bytes() {
    let env = Env::new();
    let src = env.path("db");
    std::fs::create_dir(&src).unwrap();
    let rows = 1_700_000u64;
    let day1 = dump(0..rows, &[]);
    assert!(day1.len() > 190 << 20, "dump is {} bytes", day1.len());
    std::fs::write(src.join("dump.sql"), &day1).unwrap();
    let first = env.backup(&src);
    // Day two: three bursts of rows inserted in the middle, and rows appended at the end.
    let mut edits = vec![];
    for (n, at) in [(rows / 4, 300), (rows / 2, 500), (rows * 3 / 4, 200)] {
        let lines: String = (0..at)
            .map(|k| {
                format!(
                    "INSERT INTO messages VALUES ({}, 'new-customer', 'inserted row {k}');\n",
                    10_000_000 + n + k
                )
            })
            .collect();
        edits.push((n, lines));
    }
    let mut day2 = dump(0..rows, &edits);
    let appended: String = (0..2000)
        .map(|k| {
            format!(
                "INSERT INTO messages VALUES ({}, 'late', 'appended row');\n",
                20_000_000 + k
            )
        })
        .collect();
    day2.extend_from_slice(appended.as_bytes());
    let changed = (day2.len() - day1.len()) as u64;
    std::fs::write(src.join("dump.sql"), &day2).unwrap();
    let second = env.backup(&src);
    let added = second["bytes_added"].as_u64().unwrap();
    let edits = 4u64;
    let max_chunk = 4u64 << 20;
    let limit = 2 * changed + edits * max_chunk;
    eprintln!(
        "dump {} MiB, first backup added {} MiB; changed {} KiB, second backup added {} KiB (limit {} KiB)",
        day1.len() >> 20,
        first["bytes_added"].as_u64().unwrap() >> 20,
        changed >> 10,
        added >> 10,
        limit >> 10
    );
    assert!(
        added <= limit,
        "second backup added {added} bytes for {changed} changed bytes"
    );
    // And it is far below the size of the file: the rest deduplicated.
    assert!(added < day2.len() as u64 / 10);
    let restored = env.restore(second["snapshot"].as_str().unwrap(), "db");
    assert_eq!(
        hash_file(&restored.join("dump.sql")),
        hash_file(&src.join("dump.sql"))
    );
}

/// A SQLite database written by SQLite itself (python3's sqlite3): `rows` rows of ~200 bytes of
/// random-looking text, then `updates` of them changed in place (every `step`-th row from
/// `first`), as one day of an app's edits.
fn sqlite_db(path: &std::path::Path, rows: u64, update: Option<(u64, u64)>) {
    let script = match update {
        None => format!(
            "import sqlite3, random\nr = random.Random(1)\nc = sqlite3.connect('{p}')\nc.execute('CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)')\nc.executemany('INSERT INTO messages VALUES (?, ?)', ((i, '%0192x' % r.getrandbits(768)) for i in range({rows})))\nc.commit()\n",
            p = path.display()
        ),
        Some((first, step)) => format!(
            "import sqlite3, random\nr = random.Random(2)\nc = sqlite3.connect('{p}')\nc.executemany('UPDATE messages SET body = ? WHERE id = ?', (('%0192x' % r.getrandbits(768), i) for i in range({first}, {rows}, {step})))\nc.commit()\n",
            p = path.display()
        ),
    };
    succeed(std::process::Command::new("python3").args(["-c", &script]));
}

/// Issue 14, content-aware chunking: a SQLite file is cut at its pages, so a day that changes 1 %
/// of its rows in place stores about the changed pages. The same bytes without the SQLite header
/// (cut by content, 1 MiB chunks) store nearly the whole file again. Figures printed.
#[test]
fn a_sqlite_database_is_cut_at_its_pages() {
    let env = Env::new();
    let (db_dir, cdc_dir) = (env.path("db"), env.path("cdc"));
    std::fs::create_dir_all(&db_dir).unwrap();
    std::fs::create_dir_all(&cdc_dir).unwrap();
    let db = db_dir.join("app.db");
    let rows = 100_000; // ~24 MB
    sqlite_db(&db, rows, None);
    // The same bytes, not recognisable as SQLite: content-defined chunks.
    let unrecognised = |db: &std::path::Path| {
        let mut b = std::fs::read(db).unwrap();
        b[0] = b'X';
        std::fs::write(cdc_dir.join("app.bin"), b).unwrap();
    };
    unrecognised(&db);
    let size = std::fs::metadata(&db).unwrap().len();
    env.backup(&db_dir);
    env.backup(&cdc_dir);
    // Day two: 1 % of the rows rewritten, spread over the whole table.
    sqlite_db(&db, rows, Some((7, 100)));
    unrecognised(&db);
    settle();
    let paged = env.backup(&db_dir)["bytes_added"].as_u64().unwrap();
    let cdc = env.backup(&cdc_dir)["bytes_added"].as_u64().unwrap();
    eprintln!(
        "SQLite {:.1} MB, 1 % of rows updated: cut at pages {:.2} MB added ({:.1} %), by content {:.2} MB ({:.1} %)",
        size as f64 / 1e6,
        paged as f64 / 1e6,
        paged as f64 * 100.0 / size as f64,
        cdc as f64 / 1e6,
        cdc as f64 * 100.0 / size as f64
    );
    assert!(paged * 2 < cdc, "pages {paged} vs content {cdc}");
    // And it restores to the same bytes.
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 4);
    let restored = env.restore(snaps[2]["id"].as_str().unwrap(), "db");
    assert_eq!(
        hash_file(&restored.join("app.db")),
        hash_file(&db),
        "the paged database restores to its bytes"
    );
}

/// What a plugin can ask for (`capture-path-cut`, WIT 0.1.3), through the archiver: fixed pages,
/// whole pieces (the largest the repository allows), and a page size that is not one refused.
#[test]
fn an_item_is_cut_as_asked() {
    use coffer_repo::archiver::{Counters, Cut, Session, SnapshotInfo};
    use std::sync::Arc;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("pages.bin"), noise(1_000_000, 11)).unwrap();
    std::fs::write(src.join("media.bin"), noise(10 << 20, 12)).unwrap();
    let repo = Arc::new(env.open_repo());
    let mut s = Session::start(repo.clone(), None, Arc::new(Counters::default())).unwrap();
    s.add_path_cut(
        std::path::Path::new("db"),
        &src.join("pages.bin"),
        Cut::Pages(8192),
    )
    .unwrap();
    s.add_path_cut(
        std::path::Path::new("media"),
        &src.join("media.bin"),
        Cut::Whole,
    )
    .unwrap();
    let err = s
        .add_path_cut(
            std::path::Path::new("bad"),
            &src.join("pages.bin"),
            Cut::Pages(1000),
        )
        .unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
    s.finish(SnapshotInfo {
        paths: vec![src.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let (index, _) = repo.load_index().unwrap();
    let mut sizes: Vec<u32> = index
        .chunks()
        .filter(|(_, _, e)| e.tag == coffer_repo::crypto::Tag::Data)
        .map(|(_, _, e)| e.raw_length)
        .collect();
    sizes.sort();
    let pages = 1_000_000 / 8192;
    let max = 4 << 20;
    let mut want: Vec<u32> = vec![8192; pages];
    want.push(1_000_000 % 8192);
    want.extend([2 << 20, max, max]);
    want.sort();
    assert_eq!(sizes, want);
    // Both restore to their bytes.
    let back = env.restore("latest", "db");
    assert_eq!(hash_file(&back), hash_file(&src.join("pages.bin")));
}
