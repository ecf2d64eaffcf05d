//! The durable Raft log and vote, in redb.
//!
//! Every write (append, vote, committed index, truncate, purge) is one redb write transaction
//! committed with `Durability::Immediate` before it is acknowledged, so an entry a quorum
//! acknowledged survives a SIGKILL or power loss of any minority. Writes run on the blocking
//! pool and are serialized by `&mut self`, as openraft requires.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{TypeConfig, io_err};

type C = TypeConfig;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(io_err)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    serde_json::from_slice(b).map_err(io_err)
}

/// The log store. Cheap to clone: all clones share the database.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens the log store on a database, creating its tables.
    pub fn new(db: Arc<Database>) -> io::Result<Self> {
        let txn = db.begin_write().map_err(io_err)?;
        {
            txn.open_table(LOGS).map_err(io_err)?;
            txn.open_table(META).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        Ok(Self { db })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs a durable write transaction on the blocking pool.
    async fn write<F>(&self, f: F) -> io::Result<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::Immediate).map_err(io_err)?;
            f(&txn)?;
            txn.commit().map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    fn put_meta<T: Serialize>(txn: &redb::WriteTransaction, key: &str, v: &T) -> io::Result<()> {
        let bytes = encode(v)?;
        let mut t = txn.open_table(META).map_err(io_err)?;
        t.insert(key, bytes.as_slice()).map_err(io_err)?;
        Ok(())
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOGS).map_err(io_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(KEY_PURGED)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOGS).map_err(io_err)?;
        let last = match table.last().map_err(io_err)? {
            Some((_, v)) => {
                let e: EntryOf<C> = decode(v.value())?;
                Some(e.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let vote = *vote;
        self.write(move |txn| Self::put_meta(txn, KEY_VOTE, &vote))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.write(move |txn| Self::put_meta(txn, KEY_COMMITTED, &committed))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<C>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + Send,
        I::IntoIter: Send,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| encode(&e).map(|b| (e.log_id.index, b)))
            .collect::<io::Result<_>>()?;
        let started = std::time::Instant::now();
        let res = self
            .write(move |txn| {
                let mut t = txn.open_table(LOGS).map_err(io_err)?;
                for (i, b) in &encoded {
                    t.insert(*i, b.as_slice()).map_err(io_err)?;
                }
                Ok(())
            })
            .await;
        metrics::histogram!("palisade_raft_append_seconds").record(started.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.write(move |txn| {
            let mut t = txn.open_table(LOGS).map_err(io_err)?;
            t.retain_in(from.., |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let upto = log_id.index;
        self.write(move |txn| {
            Self::put_meta(txn, KEY_PURGED, &Some(log_id))?;
            let mut t = txn.open_table(LOGS).map_err(io_err)?;
            t.retain_in(..=upto, |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }
}
