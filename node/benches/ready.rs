//! `cargo bench -p palisade-node --bench ready`: how long a new edge takes to become ready from
//! a snapshot of 10,000 applications and `PALISADE_BENCH_REVOCATIONS` revocations (default
//! 1,000,000), on the path a real subscription takes: the controller's snapshot entries
//! (`palisade_controller::sync::snapshot_entries`), encoded as the `SyncEvent` chunks that go on
//! the wire and decoded again, then the edge's `replica::snapshot` (which converts the entries,
//! compiles the policy and indexes every revocation). The catalog is built in memory with the catalog's own
//! `apply`, not through Raft (see the propagation benchmark for the end-to-end figure at 100,000).

use std::time::{Duration, Instant};

use palisade_controller::raft::state_machine::Applied;
use palisade_controller::seal::DataKey;
use palisade_policy::catalog::{Actor, Command, Envelope, RevocationTarget};
use palisade_proto::v1 as pb;
use prost::Message;

fn env(command: Command) -> Envelope {
    Envelope {
        actor: Actor {
            subject: "bench".into(),
            kind: "admin".into(),
        },
        at_ms: 1_000,
        command,
        idempotency_key: None,
    }
}

fn big_document(apps: usize) -> String {
    let apps: Vec<serde_json::Value> = (0..apps)
        .map(|a| {
            serde_json::json!({
                "id": format!("app-{a}"), "hosts": [format!("app-{a}.example.com")], "upstreams": ["http://127.0.0.1:8080"],
                "rules": (0..10).map(|r| serde_json::json!({"name": format!("r{r}"), "decision": "allow", "include": [{"group": format!("g{}", (a + r) % 300)}]})).collect::<Vec<_>>()
            })
        })
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
        "apps": apps
    })
    .to_string()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let revocations: u64 = std::env::var("PALISADE_BENCH_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let key = DataKey::parse(&"ab".repeat(32)).expect("key");

    let t = Instant::now();
    let mut applied = Applied::default();
    let (r, _) = applied.catalog.apply(
        1,
        &env(Command::ApplyPolicy {
            document_json: big_document(10_000),
            comment: String::new(),
            expected_version: 0,
        }),
    );
    r.expect("policy applies");
    for i in 0..revocations {
        let target = if i % 10 == 0 {
            RevocationTarget::Device(format!("dev-{i}"))
        } else {
            RevocationTarget::Session(format!("session-{i:012}-aaaaaaaaaaaaaaaa"))
        };
        let (r, _) = applied.catalog.apply(
            i + 2,
            &env(Command::Revoke {
                target,
                reason: "bench".into(),
                expires_at_ms: i64::MAX,
            }),
        );
        r.expect("revocation applies");
    }
    println!(
        "catalog built in memory: 10,000 applications, {revocations} revocations ({})",
        secs(t.elapsed())
    );

    let started = Instant::now();
    let t = Instant::now();
    let entries = palisade_controller::sync::snapshot_entries(&key, &applied);
    let produce = t.elapsed();
    let t = Instant::now();
    let mut wire: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    for chunk in entries.chunks(1000) {
        let ev = pb::SyncEvent {
            event: Some(pb::sync_event::Event::SnapshotChunk(pb::SnapshotChunk {
                entries: chunk.to_vec(),
            })),
        };
        let b = ev.encode_to_vec();
        bytes += b.len();
        wire.push(b);
    }
    let encode = t.elapsed();
    let t = Instant::now();
    let mut received = Vec::with_capacity(entries.len());
    for b in &wire {
        let ev = pb::SyncEvent::decode(b.as_slice()).expect("decodes");
        if let Some(pb::sync_event::Event::SnapshotChunk(c)) = ev.event {
            received.extend(c.entries);
        }
    }
    let decode = t.elapsed();
    let t = Instant::now();
    let view = palisade_node::replica::snapshot(revocations + 1, received).expect("view");
    let build = t.elapsed();
    let total = started.elapsed();
    assert_eq!(view.revocations.len() as u64, revocations);
    println!(
        "controller snapshot entries: {}   protobuf encode: {}   ({:.0} MiB on the wire)",
        secs(produce),
        secs(encode),
        bytes as f64 / 1048576.0
    );
    println!(
        "edge decode: {}   edge replica::snapshot (convert, compile 10,000 apps + index revocations): {}",
        secs(decode),
        secs(build)
    );
    println!(
        "new edge ready from a snapshot of 10,000 applications and {revocations} revocations: {} (plus network transfer)",
        secs(total)
    );
}
