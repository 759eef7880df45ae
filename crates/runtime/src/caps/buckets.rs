//! Buckets: an app's S3 bucket captured as a folder item and put back, with the plugin's own
//! credentials, through the same retrying wrapper as the repository's store.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use coffer_repo::id::ChunkId;
use coffer_repo::tree::{Node, NodeKind};
use coffer_repo::walk::{walk, Visitor};
use coffer_repo::ChunkReader;
use coffer_store::{Backend, BackendError};

use super::{Caps, R};
use crate::bindings::wit_host::Bucket;

impl Caps {
    pub(super) fn capture_bucket(&mut self, item: String, source: Bucket) -> R<u64> {
        self.check_origin(&source.endpoint, "s3")?;
        let store = open_bucket(&source)?;
        let objects = store
            .list("")
            .map_err(|e| bucket_error(&source, "listing", e))?;
        let readers = objects.into_iter().map(|o| {
            let mtime = o
                .modified
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            let r = store.open_read(&o.key, 0)?;
            Ok((o.key, mtime, r))
        });
        let (count, _) = self
            .session()?
            .add_folder(Path::new(&item), readers)
            .map_err(|e| format!("capturing bucket {}: {e}", source.name))?;
        Ok(count)
    }

    pub(super) fn restore_bucket(&mut self, item: String, target: Bucket) -> R<u64> {
        self.check_origin(&target.endpoint, "s3")?;
        let node = self.item_node(&item)?;
        let Some(root) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Err(format!("item '{item}' is not a folder of objects"));
        };
        let store = open_bucket(&target)?;
        let src = self.source()?;
        let reader = ChunkReader::new(&src.repo, &src.index);
        let mut objects = Objects {
            caps: self,
            store: store.as_ref(),
            target: &target,
            count: 0,
        };
        walk(&reader, root, Path::new(""), &mut objects).map_err(|e| e.to_string())?;
        let count = objects.count;
        Ok(count)
    }
}

/// Puts every file of a folder item into a bucket, its path below the folder as its key.
struct Objects<'a> {
    caps: &'a Caps,
    store: &'a dyn Backend,
    target: &'a Bucket,
    count: u64,
}

impl Visitor for Objects<'_> {
    type Error = coffer_repo::Error;

    fn node(&mut self, _: &ChunkId, dir: &Path, n: Node) -> coffer_repo::Result<bool> {
        if n.kind != NodeKind::File {
            return Ok(true);
        }
        let key = if dir.as_os_str().is_empty() {
            n.name.clone()
        } else {
            format!("{}/{}", dir.display(), n.name)
        };
        // Opened anew for each attempt the retrying store makes.
        let mut open = || -> std::io::Result<Box<dyn Read + Send>> {
            let r = self
                .caps
                .chunks_reader(n.content.clone())
                .map_err(std::io::Error::other)?;
            Ok(Box::new(r))
        };
        self.store.put_from(&key, &mut open).map_err(|e| {
            coffer_repo::Error::Invalid(bucket_error(
                self.target,
                &format!("restoring {key} into"),
                e,
            ))
        })?;
        self.count += 1;
        Ok(true)
    }
}

/// A bucket operation's error; a missing bucket said plainly.
fn bucket_error(b: &Bucket, what: &str, e: BackendError) -> String {
    let text = e.to_string();
    if text.contains("NoSuchBucket") {
        format!(
            "bucket {} does not exist at {}: create it, or fix the bucket name",
            b.name, b.endpoint
        )
    } else {
        format!("{what} bucket {}: {text}", b.name)
    }
}

/// A plugin's bucket, opened with the credentials the plugin gave (never the repository's).
fn open_bucket(b: &Bucket) -> R<Arc<dyn Backend>> {
    coffer_store::s3::open_bucket(
        &b.endpoint,
        &b.region,
        &b.name,
        &b.prefix,
        &b.access_key_id,
        &b.secret_access_key,
    )
    .map_err(|e| e.to_string())
}
