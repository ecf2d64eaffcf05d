//! The Raft state machine: the catalog from `palisade-policy`, applied entry by entry.
//!
//! The applied state lives in memory behind a lock that readers (admin API, edge sync) share.
//! Snapshots are serialized states stored in the same redb file and sent to lagging members;
//! they hold secrets only as `Sealed` ciphertext, exactly like the log.

use std::collections::VecDeque;
use std::io::{self, Cursor};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, RaftTypeConfig};
use palisade_policy::catalog::{Catalog, Resolved};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{Request, Response, TypeConfig, io_err};

type C = TypeConfig;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const KEY_CURRENT: &str = "current";

/// Everything the state machine holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// Last applied log id.
    pub last_applied: Option<LogIdOf<C>>,
    /// Last applied membership.
    pub last_membership: StoredMembershipOf<C>,
    /// The catalog.
    pub catalog: Catalog,
    /// When the last applied entry was stamped by its leader (unix ms); 0 before any.
    pub last_applied_at_ms: i64,
}

impl Applied {
    /// The revision: the index of the last applied entry.
    pub fn revision(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }
}

/// One applied entry as edges see it: the objects it changed, captured when it was applied.
#[derive(Debug, Clone)]
pub struct DeltaEntry {
    /// Its revision (log index).
    pub revision: u64,
    /// The revision applied before it.
    pub prev_revision: u64,
    /// When its leader stamped it (unix ms); 0 for blank and membership entries.
    pub at_ms: i64,
    /// The changed objects (empty for blank, membership and refused entries).
    pub items: Vec<Resolved>,
}

/// What the state machine announces after applying.
#[derive(Debug, Clone)]
pub enum AppliedEvent {
    /// One entry applied.
    Entry(Arc<DeltaEntry>),
    /// A snapshot replaced the whole state.
    Snapshot {
        /// Its revision.
        revision: u64,
    },
}

/// How many recent entries are kept for edges resuming without a snapshot.
pub const DEFAULT_RESUME_WINDOW: usize = 10_000;

#[derive(Debug, Default)]
struct Shared {
    applied: Applied,
    /// The most recent entries, contiguous, oldest first.
    ring: VecDeque<Arc<DeltaEntry>>,
    ring_capacity: usize,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

/// Read access to the applied state, shared with the admin API and the edge sync server.
#[derive(Debug, Clone)]
pub struct StateHandle {
    state: Arc<RwLock<Shared>>,
    applied: watch::Receiver<u64>,
    events: broadcast::Sender<AppliedEvent>,
}

impl StateHandle {
    /// Runs `f` with the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.applied)
    }

    /// Runs `f` with the applied state and the recent entries (contiguous, oldest first, the
    /// last one being the applied revision), consistently.
    pub fn read_with_recent<T>(
        &self,
        f: impl FnOnce(&Applied, &VecDeque<Arc<DeltaEntry>>) -> T,
    ) -> T {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.applied, &guard.ring)
    }

    /// A receiver of the applied revision.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Subscribes to applied events.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEvent> {
        self.events.subscribe()
    }
}

/// The state machine.
#[derive(Debug)]
pub struct StateMachine {
    db: Arc<Database>,
    state: Arc<RwLock<Shared>>,
    applied_tx: watch::Sender<u64>,
    events: broadcast::Sender<AppliedEvent>,
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot from the database.
    pub fn new(db: Arc<Database>) -> io::Result<Self> {
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(SNAPSHOT).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        let restored = match load_snapshot(&db)? {
            Some(s) => decode_state(&s.data)?,
            None => Applied::default(),
        };
        let (applied_tx, _) = watch::channel(restored.revision());
        let (events, _) = broadcast::channel(4096);
        let shared = Shared {
            applied: restored,
            ring: VecDeque::new(),
            ring_capacity: DEFAULT_RESUME_WINDOW,
        };
        Ok(Self {
            db,
            state: Arc::new(RwLock::new(shared)),
            applied_tx,
            events,
        })
    }

    /// Sets how many recent entries are kept for edges resuming without a snapshot.
    pub fn with_resume_window(self, entries: usize) -> Self {
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .ring_capacity = entries.max(1);
        self
    }

    /// A read handle to the applied state.
    pub fn handle(&self) -> StateHandle {
        StateHandle {
            state: self.state.clone(),
            applied: self.applied_tx.subscribe(),
            events: self.events.clone(),
        }
    }
}

fn load_snapshot(db: &Database) -> io::Result<Option<StoredSnapshot>> {
    let txn = db.begin_read().map_err(io_err)?;
    let table = txn.open_table(SNAPSHOT).map_err(io_err)?;
    match table.get(KEY_CURRENT).map_err(io_err)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(io_err)?)),
        None => Ok(None),
    }
}

fn store_snapshot(db: &Database, s: &StoredSnapshot) -> io::Result<()> {
    let bytes = serde_json::to_vec(s).map_err(io_err)?;
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(Durability::Immediate).map_err(io_err)?;
    {
        let mut t = txn.open_table(SNAPSHOT).map_err(io_err)?;
        t.insert(KEY_CURRENT, bytes.as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)
}

fn decode_state(data: &[u8]) -> io::Result<Applied> {
    serde_json::from_slice(data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot does not decode: {e}"),
        )
    })
}

/// Builds snapshots from a copy of the state taken under the lock.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<Database>,
    state: Arc<RwLock<Shared>>,
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let (data, meta) = {
            let g = self.state.read().unwrap_or_else(|p| p.into_inner());
            let s = &g.applied;
            let data = serde_json::to_vec(s).map_err(io_err)?;
            let meta = SnapshotMetaOf::<C> {
                last_log_id: s.last_applied,
                last_membership: s.last_membership.clone(),
            };
            (data, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        let stored =
            tokio::task::spawn_blocking(move || store_snapshot(&db, &stored).map(|_| stored))
                .await
                .map_err(io_err)??;
        Ok(SnapshotOf::<C, _> {
            meta,
            snapshot: Cursor::new(stored.data),
        })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok((s.applied.last_applied, s.applied.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let revision = entry.log_id.index;
            let (response, event) = {
                let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
                let shared = &mut *g;
                let s = &mut shared.applied;
                let prev_revision = s.revision();
                s.last_applied = Some(entry.log_id);
                let (response, at_ms, items) = match entry.payload {
                    EntryPayload::Blank => (Response::Empty, 0, Vec::new()),
                    EntryPayload::Normal(Request(env)) => {
                        let (result, changes) = s.catalog.apply(revision, &env);
                        s.last_applied_at_ms = env.at_ms;
                        (
                            Response::Applied(result),
                            env.at_ms,
                            s.catalog.resolve(&changes),
                        )
                    }
                    EntryPayload::Membership(m) => {
                        s.last_membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m);
                        (Response::Empty, 0, Vec::new())
                    }
                };
                let delta = Arc::new(DeltaEntry {
                    revision,
                    prev_revision,
                    at_ms,
                    items,
                });
                if shared
                    .ring
                    .back()
                    .is_some_and(|b| b.revision != prev_revision)
                {
                    shared.ring.clear();
                }
                shared.ring.push_back(delta.clone());
                while shared.ring.len() > shared.ring_capacity {
                    shared.ring.pop_front();
                }
                (response, AppliedEvent::Entry(delta))
            };
            // No receiver is fine: nobody is subscribed yet.
            let _ = self.events.send(event);
            self.applied_tx.send_replace(revision);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            state: self.state.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let mut restored = decode_state(&data)?;
        // The metadata is authoritative for what the snapshot covers.
        restored.last_applied = meta.last_log_id;
        restored.last_membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || store_snapshot(&db, &stored))
            .await
            .map_err(io_err)??;
        let revision = restored.revision();
        {
            let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
            g.applied = restored;
            g.ring.clear();
        }
        metrics::counter!("palisade_raft_snapshots_installed_total").increment(1);
        tracing::info!(revision, "installed a snapshot from the leader");
        let _ = self.events.send(AppliedEvent::Snapshot { revision });
        self.applied_tx.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || load_snapshot(&db))
            .await
            .map_err(io_err)??;
        Ok(stored.map(|s| SnapshotOf::<C, _> {
            meta: s.meta,
            snapshot: Cursor::new(s.data),
        }))
    }
}

// Keeps the RaftTypeConfig import used for doc links in this module.
#[allow(dead_code)]
fn _assert_config<T: RaftTypeConfig>() {}
