//! The embedded backend: one redb file (`<state dir>/blocker.redb`) on a local disk.
//!
//! Every change is one transaction committed with redb's default durability (fsync). Methods
//! block (file I/O): [`super::Store`] calls them on the blocking pool.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use ipnet::IpNet;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Batch, BlockRecord, Snapshot, decode, encode, parse_key};
use crate::error::{Error, Result, store};

const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocks");
const OFFENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("offences");
const OWNED: TableDefinition<&str, i64> = TableDefinition::new("owned");

/// The redb store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<Path>,
}

impl EmbeddedStore {
    /// Open (or create) `<dir>/blocker.redb`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: format!("cannot create state dir {}", dir.display()),
            source,
        })?;
        let path = dir.join("blocker.redb");
        let db = Database::create(&path).map_err(store)?;
        // Create the tables so that readers never see them missing.
        let txn = db.begin_write().map_err(store)?;
        txn.open_table(BLOCKS).map_err(store)?;
        txn.open_table(OFFENCES).map_err(store)?;
        txn.open_table(OWNED).map_err(store)?;
        txn.commit().map_err(store)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: Arc::from(path),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read everything (at start).
    pub fn load(&self) -> Result<Snapshot> {
        let txn = self.db.begin_read().map_err(store)?;
        let mut snap = Snapshot::default();
        for item in txn
            .open_table(BLOCKS)
            .map_err(store)?
            .iter()
            .map_err(store)?
        {
            let (k, v) = item.map_err(store)?;
            let rec: BlockRecord = decode(k.value(), v.value())?;
            snap.blocks.insert(rec.cidr, rec);
        }
        for item in txn
            .open_table(OFFENCES)
            .map_err(store)?
            .iter()
            .map_err(store)?
        {
            let (k, v) = item.map_err(store)?;
            snap.offences
                .insert(parse_key(k.value())?, decode(k.value(), v.value())?);
        }
        for item in txn
            .open_table(OWNED)
            .map_err(store)?
            .iter()
            .map_err(store)?
        {
            let (k, _) = item.map_err(store)?;
            snap.owned.insert(parse_key(k.value())?);
        }
        Ok(snap)
    }

    /// Commit a batch in one durable transaction.
    pub fn commit(&self, batch: &Batch) -> Result<()> {
        self.commit_all(std::slice::from_ref(batch))
    }

    /// Commit several batches, applied in order, in one durable transaction (group commit).
    pub fn commit_all(&self, batches: &[Batch]) -> Result<()> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store)?;
        for batch in batches {
            let mut blocks = txn.open_table(BLOCKS).map_err(store)?;
            for rec in &batch.upserts {
                blocks
                    .insert(rec.cidr.to_string().as_str(), encode(rec)?.as_slice())
                    .map_err(store)?;
            }
            for net in &batch.removes {
                blocks.remove(net.to_string().as_str()).map_err(store)?;
            }
            let mut offences = txn.open_table(OFFENCES).map_err(store)?;
            for (net, o) in &batch.offences {
                offences
                    .insert(net.to_string().as_str(), encode(o)?.as_slice())
                    .map_err(store)?;
            }
            for net in &batch.forget_offences {
                offences.remove(net.to_string().as_str()).map_err(store)?;
            }
        }
        txn.commit().map_err(store)?;
        Ok(())
    }

    /// Record firewall entries as ours (before they are added) or forget them (after removal).
    pub fn set_owned(&self, add: &BTreeSet<IpNet>, remove: &BTreeSet<IpNet>) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let now = Utc::now().timestamp_millis();
        let txn = self.db.begin_write().map_err(store)?;
        {
            let mut t = txn.open_table(OWNED).map_err(store)?;
            for net in add {
                t.insert(net.to_string().as_str(), now).map_err(store)?;
            }
            for net in remove {
                t.remove(net.to_string().as_str()).map_err(store)?;
            }
        }
        txn.commit().map_err(store)?;
        Ok(())
    }
}
