//! Prune marks (`prune/<id>`): packs a prune found unused, waiting out a grace period before
//! they are deleted.
//!
//! A mark is written once and never changed. While a *pending* mark exists, backups do not
//! deduplicate against its packs (they store those chunks anew), so only a backup that loaded
//! its index before the mark appeared can come to rely on them, and such a backup checks, before
//! it saves its snapshot, that the grace period has not run out (see
//! [`crate::Repository::check_commit`]). After the grace period, measured on the store's
//! clock, the next prune deletes the packs no snapshot needs and keeps ("recovers") the rest.
//! The deleted ones stay listed in a *swept* mark until no index object names them any more, so
//! a stale index entry can never make a backup rely on a deleted pack.
//!
//! Encrypted to the index recipient like index objects, so write-only hosts can read them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::PackId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkState {
    /// Packs to delete once the grace period has passed, unless a snapshot needs them.
    Pending,
    /// Packs already deleted; kept only to fence off index entries that may still name them.
    Swept,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub state: MarkState,
    /// The grace period this mark was made with, in seconds.
    pub grace_secs: u64,
    /// Who made it, for people reading the repository.
    pub host: String,
    /// Makes two marks of the same packs distinct objects.
    pub nonce: String,
    pub packs: Vec<PackId>,
}

impl Mark {
    pub fn new(state: MarkState, grace_secs: u64, packs: Vec<PackId>) -> Mark {
        Mark {
            state,
            grace_secs,
            host: crate::hostname(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            packs,
        }
    }
}

/// A mark as read from the store, with the time the store wrote it.
#[derive(Debug, Clone)]
pub struct StoredMark {
    pub key: String,
    pub time: DateTime<Utc>,
    pub mark: Mark,
}

impl StoredMark {
    /// When its packs may be deleted, on the store's clock.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.time + chrono::Duration::seconds(self.mark.grace_secs as i64)
    }
}

pub fn key(id: &[u8; 32]) -> String {
    format!("prune/{}", hex::encode(id))
}
