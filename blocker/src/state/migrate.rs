//! Carry the state of the embedded backend (a `blocker.redb` file) into the `nats` backend's
//! bucket, so that a move to several replicas keeps every decided block, the offence counts
//! that escalate repeat offenders, and the record of which IP-set entries Palisade owns
//! (without it the new replicas would treat the old blocker's entries as foreign: never
//! released, never removed).
//!
//! It writes as a replica would: it takes the lease first (waiting out a crashed holder's
//! lease; refusing while a live replica renews it), writes with the lease's fencing, and
//! releases the lease at the end so that a replica takes over at once. It only fills an empty
//! bucket: merging two states could resurrect released blocks.

use std::collections::BTreeSet;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use tracing::info;

use crate::error::{Error, Result};
use crate::lease;
use crate::state::Batch;
use crate::state::embedded::EmbeddedStore;
use crate::state::jetstream::{BucketSettings, KvStore};

/// What was carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub blocks: usize,
    pub offences: usize,
    pub owned: usize,
}

/// Copy the embedded state in `from_dir` into the bucket of `settings`. `lease_time` is the
/// lease of the replicas (`state.lease_secs`): a holder that stopped renewing is waited out
/// for that long, a live one makes this fail after `2 × lease_time`.
pub async fn embedded_to_nats(
    from_dir: &Path,
    js: &async_nats::jetstream::Context,
    settings: &BucketSettings,
    lease_time: Duration,
) -> Result<Migrated> {
    check_source(from_dir)?;
    // redb locks the file: this fails while the old blocker still runs.
    let embedded = EmbeddedStore::open(from_dir)?;
    let snap = embedded.load()?;
    drop(embedded);

    let kv = KvStore::open(js, settings).await?;
    let incarnation = format!("{}", std::process::id());
    let mut give_up = pin!(tokio::time::sleep(lease_time * 2 + Duration::from_secs(1)));
    if !lease::campaign(&kv, "migrate-state", &incarnation, lease_time, &mut give_up).await? {
        let holder = kv
            .read_lease()
            .await?
            .map(|(l, _)| l.holder)
            .unwrap_or_default();
        return Err(Error::Migrate(format!(
            "replica `{holder}` holds the lease of bucket `{}` and keeps renewing it: stop every \
             replica on the nats backend before migrating",
            settings.bucket
        )));
    }
    // Renewed while writing: a large state takes longer than one lease to write.
    let result = tokio::select! {
        r = fill(&kv, snap, &settings.bucket) => r,
        () = lease::keep(&kv, lease_time) => Err(Error::Fenced(
            "the lease was lost while writing the state: run the migration again into an empty bucket".into(),
        )),
    };
    // Give the lease back at once, whatever happened: a replica may take over now.
    let released = kv.release().await;
    let migrated = result?;
    released?;
    Ok(migrated)
}

/// Refuse a directory without a `blocker.redb` (opening would create an empty one).
pub fn check_source(from_dir: &Path) -> Result<()> {
    let file = from_dir.join("blocker.redb");
    if file.is_file() {
        Ok(())
    } else {
        Err(Error::Migrate(format!(
            "no embedded state to migrate: {} does not exist",
            file.display()
        )))
    }
}

async fn fill(kv: &KvStore, snap: super::Snapshot, bucket: &str) -> Result<Migrated> {
    let existing = kv.load().await?;
    if !existing.blocks.is_empty() || !existing.owned.is_empty() || !existing.offences.is_empty() {
        return Err(Error::Migrate(format!(
            "bucket `{bucket}` already holds {} blocks, {} offence records and {} owned entries: \
             migrate into an empty bucket (a new `state.bucket`, or delete this one's stream \
             `KV_{bucket}` once no replica uses it)",
            existing.blocks.len(),
            existing.offences.len(),
            existing.owned.len()
        )));
    }
    let migrated = Migrated {
        blocks: snap.blocks.len(),
        offences: snap.offences.len(),
        owned: snap.owned.len(),
    };
    let batch = Batch {
        upserts: snap.blocks.into_values().collect(),
        offences: snap.offences.into_iter().collect(),
        ..Batch::default()
    };
    kv.commit_all(&[batch]).await?;
    kv.set_owned(&snap.owned, &BTreeSet::new()).await?;
    info!(
        blocks = migrated.blocks,
        offences = migrated.offences,
        owned = migrated.owned,
        %bucket,
        "embedded state written to the bucket"
    );
    Ok(migrated)
}
