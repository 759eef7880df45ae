//! `coffer check`: verify the repository.

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::checker::{self, ReadData};

use super::{print_json, Global, Progress};

#[derive(clap::Args)]
pub struct Args {
    /// Download and verify every pack
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Download and verify a random share of the packs, e.g. 10%
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let read = match (&a.read_data, &a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => {
            let n: f64 = s
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|n: &f64| *n > 0.0 && *n <= 100.0)
                .ok_or_else(|| {
                    anyhow::anyhow!("--read-data-subset takes a percentage such as 10%, not '{s}'")
                })?;
            ReadData::Subset(n)
        }
        _ => ReadData::None,
    };
    let repo = g.open()?;
    let progress = Progress::start("check", || "checking".to_string());
    let report = checker::check(&repo, read);
    drop(progress);
    let report = report?;
    if g.json {
        print_json(&report);
    } else {
        for n in &report.notes {
            out!("note: {n}");
        }
        for p in &report.problems {
            let snaps = if p.snapshots.is_empty() {
                String::new()
            } else {
                format!(" [affects snapshot(s) {}]", p.snapshots.join(", "))
            };
            out!("error: {}: {}{snaps}", p.object, p.message);
        }
        out!(
            "checked {} snapshots, {} packs ({} read), {} chunks: {}",
            report.snapshots,
            report.packs,
            report.packs_read,
            report.chunks,
            if report.problems.is_empty() {
                "no problems".to_string()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Integrity
    })
}
