//! `coffer snapshots`: list snapshots.

use anyhow::Result;
use coffer::ExitCode;

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
    if g.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).expect("snapshot serializes");
                v["id"] = id.to_hex().into();
                v
            })
            .collect();
        print_json(&v);
    } else {
        out!(
            "{:<10} {:<20} {:<16} {:>10}  paths / app",
            "id",
            "time",
            "host",
            "size"
        );
        for (id, s) in &rows {
            out!(
                "{:<10} {:<20} {:<16} {:>10}  {}",
                id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S"),
                s.hostname,
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
        }
        out!("{} snapshot(s)", rows.len());
    }
    Ok(if damaged > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}
