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

use super::history::{self, HistoryEntry, HistoryKey, HistoryQuery};
use super::{Batch, BlockRecord, Snapshot, decode, encode, parse_key};
use crate::error::{Error, Result, store};

const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocks");
const OFFENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("offences");
const OWNED: TableDefinition<&str, i64> = TableDefinition::new("owned");
/// History entries by id (JSON).
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// The history's index: [`history::index_key`] (network, then id) to the entry's time (Unix
/// ms). Read whole at start (no JSON decoded), ranged by network for queries.
const HISTORY_INDEX: TableDefinition<&[u8], i64> = TableDefinition::new("history_index");

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
        txn.open_table(HISTORY).map_err(store)?;
        txn.open_table(HISTORY_INDEX).map_err(store)?;
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
        for item in txn
            .open_table(HISTORY_INDEX)
            .map_err(store)?
            .iter()
            .map_err(store)?
        {
            let (k, at) = item.map_err(store)?;
            let (cidr, id) = history::parse_index_key(k.value()).ok_or_else(|| Error::Corrupt {
                key: format!("history_index {:?}", k.value()),
                message: "not a history index key".into(),
            })?;
            let at = chrono::DateTime::from_timestamp_millis(at.value()).unwrap_or_default();
            snap.history.push(HistoryKey { id, cidr, at });
        }
        snap.history.sort_unstable_by_key(|k| k.id);
        Ok(snap)
    }

    /// The history entries `query` asks for, newest first.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let txn = self.db.begin_read().map_err(store)?;
        let index = txn.open_table(HISTORY_INDEX).map_err(store)?;
        let (lo, hi) = history::index_range(&query.scope());
        let mut ids = Vec::new();
        for item in index.range(lo.as_slice()..=hi.as_slice()).map_err(store)? {
            let (k, _) = item.map_err(store)?;
            if let Some((cidr, id)) = history::parse_index_key(k.value())
                && query.wants(&cidr, id)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable_by_key(|id| std::cmp::Reverse(*id));
        ids.truncate(query.limit);
        let entries = txn.open_table(HISTORY).map_err(store)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = entries.get(id).map_err(store)? {
                out.push(decode(&format!("history {id}"), v.value())?);
            }
        }
        Ok(out)
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
            if !batch.history.is_empty() || batch.history_prune.is_some() {
                let mut entries = txn.open_table(HISTORY).map_err(store)?;
                let mut index = txn.open_table(HISTORY_INDEX).map_err(store)?;
                for e in &batch.history {
                    entries.insert(e.id, encode(e)?.as_slice()).map_err(store)?;
                    index
                        .insert(
                            history::index_key(&e.cidr, e.id).as_slice(),
                            e.at.timestamp_millis(),
                        )
                        .map_err(store)?;
                }
                for k in batch.history_prune.iter().flat_map(|p| &p.remove) {
                    entries.remove(k.id).map_err(store)?;
                    index
                        .remove(history::index_key(&k.cidr, k.id).as_slice())
                        .map_err(store)?;
                }
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
