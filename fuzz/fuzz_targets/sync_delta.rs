//! Sync deltas as a (possibly hostile or buggy) controller sends them, applied to a replica:
//! never a panic; a delta is applied whole or refused, and the old view is untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::v1 as pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(delta) = pb::CatalogDelta::decode(data) else {
        return;
    };
    let Ok(base) = palisade_node::replica::snapshot(5, Vec::new()) else {
        return;
    };
    match palisade_node::replica::apply(&base, &delta) {
        Ok(v) => assert_eq!(v.revision, delta.revision),
        Err(_) => assert_eq!(base.revision, 5),
    }
    if let Ok(entries) = pb::SnapshotChunk::decode(data) {
        let _ = palisade_node::replica::snapshot(1, entries.entries);
    }
});
