//! openraft's storage conformance suite against the redb log store and state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb};
use palisade_controller::raft::{LogStore, StateMachine, TypeConfig, open_db};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        let db = open_db(&dir.path().join("raft.redb")).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        let log = LogStore::new(db.clone()).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        let sm = StateMachine::new(db).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await?;
    Ok(())
}
