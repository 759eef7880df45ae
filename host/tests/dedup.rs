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
