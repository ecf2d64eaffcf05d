//! Bad input gets a precise error and changes nothing: malformed documents, unknown fields,
//! oversize documents, callers without a certificate, and callers whose role does not allow the
//! call.

mod support;

use std::time::Duration;

use palisade_link::admin::validation_failure;
use palisade_proto::v1 as pb;
use support::{Cluster, Options};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

async fn revision(c: &Cluster) -> (u64, usize) {
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let s = c.status(leader).await.expect("status");
    let history = c
        .client()
        .call(|ch| async move {
            pb::policy_service_client::PolicyServiceClient::new(ch)
                .list_policy_history(pb::ListPolicyHistoryRequest {
                    page: None,
                    consistency: 0,
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("history");
    (s.commit_index, history.versions.len())
}

async fn apply(
    client: &palisade_link::admin::AdminClient,
    doc: String,
) -> Result<pb::ApplyPolicyResponse, tonic::Status> {
    let req = pb::ApplyPolicyRequest {
        document_json: doc,
        comment: "bad input test".into(),
        expected_version: 0,
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::policy_service_client::PolicyServiceClient::new(ch)
                    .max_encoding_message_size(64 << 20)
                    .apply_policy(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

fn examples(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../docs/examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors_and_write_nothing() {
    let c = Cluster::start(
        3,
        0,
        Options {
            max_document_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .await;
    let admin = c.client();
    apply(&admin, examples("wiki.json"))
        .await
        .expect("a valid document applies");
    // Housekeeping's first writes (the signing key, a garbage collection) land within a tick
    // (500 ms) of leadership, then nothing for a minute: the baseline is the first revision
    // that holds across more than a tick.
    let mut before = revision(&c).await;
    let settled_by = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = revision(&c).await;
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < settled_by,
            "housekeeping never settled"
        );
        before = now;
    }

    // Malformed JSON.
    let e = apply(&admin, "{\"schema_version\": 1, \"apps\": [".into())
        .await
        .expect_err("malformed");
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = validation_failure(&e).expect("violations attached");
    assert_eq!(v.violations[0].path, "$");
    assert!(
        v.violations[0].reason.starts_with("invalid JSON"),
        "{}",
        v.violations[0].reason
    );

    // Unknown fields, every one reported with its path.
    let e = apply(&admin, examples("invalid/unknown-fields.json"))
        .await
        .expect_err("unknown fields");
    let paths: Vec<String> = validation_failure(&e)
        .expect("violations")
        .violations
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(
        paths,
        vec![
            "applications",
            "identity_providers[0].client_secret",
            "apps[0].upstream",
            "apps[0].session.idle",
            "apps[0].rules[0].comment",
            "apps[0].rules[0].require[0].device.encrypted"
        ]
    );

    // Many semantic errors at once, matching the golden list.
    let e = apply(&admin, examples("invalid/many-errors.json"))
        .await
        .expect_err("many errors");
    let got: Vec<String> = validation_failure(&e)
        .expect("violations")
        .violations
        .into_iter()
        .map(|v| format!("{}: {}", v.path, v.reason))
        .collect();
    let want: Vec<String> = examples("invalid/many-errors.errors")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, want);

    // Over the size limit this cluster was started with (64 KiB).
    let mut big: serde_json::Value = serde_json::from_str(&examples("wiki.json")).expect("json");
    big["apps"][0]["name"] = serde_json::Value::String("x".repeat(100 * 1024));
    let e = apply(&admin, big.to_string()).await.expect_err("oversize");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("this controller accepts at most 65536 bytes"),
        "{}",
        e.message()
    );

    // A viewer may not write; an edge may not call the admin API.
    let e = apply(&c.client_as("viewer"), examples("wiki.json"))
        .await
        .expect_err("viewer");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("needs the operator role"),
        "{}",
        e.message()
    );
    let e = Cluster::revoke(&c.client_as("viewer"), "s")
        .await
        .expect_err("viewer revoke");
    assert_eq!(e.code(), Code::PermissionDenied);

    // No client certificate: the TLS handshake is refused.
    let ca = std::fs::read_to_string(c.pki().join("ca.pem")).expect("ca");
    let ep = Endpoint::from_shared(format!("https://{}", c.members[&1].addr()))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .expect("tls");
    let result = async {
        let ch = ep.connect().await?;
        pb::policy_service_client::PolicyServiceClient::new(ch)
            .apply_policy(pb::ApplyPolicyRequest {
                document_json: examples("wiki.json"),
                comment: String::new(),
                expected_version: 0,
            })
            .await
            .map_err(|s| -> Box<dyn std::error::Error> { Box::new(s) })?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(
        result.is_err(),
        "a caller without a certificate must be refused"
    );

    // Revocations with no reason or no target.
    let e = c
        .client()
        .call(|ch| async move {
            pb::revocation_service_client::RevocationServiceClient::new(ch)
                .revoke(pb::RevokeRequest {
                    target: None,
                    reason: "r".into(),
                    ttl: None,
                })
                .await
        })
        .await
        .expect_err("no target");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Nothing above was written.
    assert_eq!(
        revision(&c).await,
        before,
        "a refused request must not change the log or the policy history"
    );

    // Every accepted write is recorded with its actor.
    let audit = c
        .client()
        .call(|ch| async move {
            pb::audit_service_client::AuditServiceClient::new(ch)
                .list_audit_events(pb::ListAuditEventsRequest {
                    action_prefix: "policy.".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("audit");
    assert_eq!(audit.events.len(), 1);
    assert_eq!(
        audit.events[0].actor.as_ref().map(|a| a.subject.as_str()),
        Some("admin@local")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_not_in_the_data_directory() {
    let c = Cluster::start(
        1,
        0,
        Options {
            snapshot_every: 5,
            logs_to_keep: 1,
            ..Options::default()
        },
    )
    .await;
    let seed = "KNOWN-SEED-JBSWY3DPEHPK3PXP-0123456789";
    let admin = c.client();
    admin
        .call(|ch| async move {
            pb::key_service_client::KeyServiceClient::new(ch)
                .put_secret(pb::PutSecretRequest {
                    name: "corp-oidc".into(),
                    value: seed.as_bytes().to_vec(),
                })
                .await
        })
        .await
        .expect("put secret");
    for i in 0..10 {
        Cluster::revoke(&admin, &format!("s{i}"))
            .await
            .expect("write");
    }
    // A snapshot has been taken by now (every 5 entries); both log and snapshot were written.
    support::eventually("a snapshot", Duration::from_secs(20), || async {
        c.status(1).await.ok().filter(|s| s.snapshot_index > 0)
    })
    .await;
    let data = c.dir.path().join("data-1");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        if bytes.windows(seed.len()).any(|w| w == seed.as_bytes()) {
            found.push(path);
        }
    }
    assert!(found.is_empty(), "the secret is readable in {found:?}");
    // And it is not in the logs either.
    let log = std::fs::read_to_string(&c.members[&1].log).expect("log");
    assert!(!log.contains(seed));
}
