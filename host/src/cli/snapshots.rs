//! `coffer snapshots`: list snapshots.

use anyhow::Result;
use coffer::ExitCode;

use coffer_repo::snapshot::Writer;

use super::{human, print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag
    #[arg(long)]
    pub tag: Option<String>,
    /// Only snapshots of this app
    #[arg(long)]
    pub app: Option<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let all = repo.list_snapshots()?;
    let mut rows = vec![];
    let mut damaged = 0;
    for (id, s) in all {
        match s {
            Ok(s) => {
                if a.host.as_ref().is_some_and(|h| *h != s.hostname)
                    || a.tag.as_ref().is_some_and(|t| !s.tags.contains(t))
                    || a.app.as_ref().is_some_and(|x| s.app.as_ref() != Some(x))
                {
                    continue;
                }
                rows.push((id, s));
            }
            Err(e) => {
                damaged += 1;
                eout!("coffer: warning: {e}");
            }
        }
    }
    let drills = coffer::ops::drill::recorded(&g.cache_dir(), &repo);
    let drill_of = |id: &coffer_repo::id::SnapshotId, app: Option<&String>| {
        let d = drills.apps.get(app?)?;
        let hex = id.to_hex();
        [&d.last, &d.last_ok]
            .into_iter()
            .flatten()
            .find(|x| x.snapshot == hex)
            .cloned()
    };
    // Who wrote each: a signature check per snapshot, done once.
    let writers: Vec<Writer> = rows.iter().map(|(_, s)| repo.writer(s)).collect();
    if g.json {
        let v: Vec<_> = rows
            .iter()
            .zip(&writers)
            .map(|((id, s), w)| {
                let mut v = serde_json::to_value(s).expect("snapshot serializes");
                v["id"] = id.to_hex().into();
                v["written_by"] = serde_json::to_value(w).expect("serializes");
                if let Some(d) = drill_of(id, s.app.as_ref()) {
                    v["drill"] = serde_json::json!({ "ok": d.ok, "at": d.at, "secs": d.secs });
                }
                v
            })
            .collect();
        print_json(&v);
    } else {
        out!(
            "{:<10} {:<20} {:<16} {:<20} {:>10}  paths / app",
            "id",
            "time",
            "host",
            "written by",
            "size"
        );
        for ((id, s), w) in rows.iter().zip(&writers) {
            let writer = match w {
                Writer::Signed {
                    key, write_only, ..
                } => format!(
                    "{} key {}",
                    if *write_only { "write-only" } else { "full" },
                    &key[..8]
                ),
                Writer::Unverified { .. } => "unverified".into(),
                Writer::Forged { .. } => "FORGED".into(),
            };
            out!(
                "{:<10} {:<20} {:<16} {:<20} {:>10}  {}",
                id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S"),
                s.hostname,
                writer,
                human(s.summary.as_ref().map_or(0, |x| x.total_bytes)),
                match (&s.app, &s.plugin) {
                    (Some(app), Some(p)) => format!(
                        "app {app} (plugin {} {}): {}",
                        p.name,
                        p.version,
                        s.items.join(", ")
                    ),
                    _ => s.paths.join(" "),
                }
            );
            if let (Some(m), true) = (&s.metadata, s.app.is_some()) {
                out!("{:<10} metadata {}", "", m);
            }
            if let Some(d) = drill_of(id, s.app.as_ref()) {
                out!(
                    "{:<10} drill {} at {}",
                    "",
                    if d.ok { "passed" } else { "FAILED" },
                    d.at
                );
            }
        }
        out!("{} snapshot(s)", rows.len());
        for ((id, _), w) in rows.iter().zip(&writers) {
            match w {
                Writer::Forged { reason } => {
                    eout!("coffer: warning: snapshot {} is forged: {reason}; restore refuses it", id.short())
                }
                Writer::Unverified { reason } if repo.signatures_required() => eout!(
                    "coffer: warning: snapshot {} is not verified ({reason}): it is never `latest`; restore it only by id if you know where it came from",
                    id.short()
                ),
                _ => {}
            }
        }
    }
    Ok(if damaged > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}
