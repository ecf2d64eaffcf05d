//! The edge's replica of the catalog. The `View` every request reads, its revocation index and
//! its errors live in the enforcement core (`palisade_edge_core::view`), in domain types; the
//! wire side (snapshot entries and deltas as they arrive) is converted once, in
//! `sync::convert`. This module names both for the rest of the edge.

use imbl::HashSet;

pub use crate::sync::convert::{apply, snapshot};
pub use palisade_edge_core::view::{Change, Delta, ReplicaError, Revocations, View};

/// Session ids revoked in a view (for tests and diagnostics).
pub fn revoked_session_ids(v: &View) -> HashSet<String> {
    v.revocations.revoked_session_ids()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::v1 as pb;

    fn session_rev(id: &str, sid: &str) -> pb::Revocation {
        pb::Revocation {
            id: id.into(),
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::SessionId(sid.into())),
            }),
            ..Default::default()
        }
    }

    fn delta(rev: u64, prev: u64, changes: Vec<pb::catalog_change::Change>) -> pb::CatalogDelta {
        pb::CatalogDelta {
            revision: rev,
            prev_revision: prev,
            committed_at: None,
            changes: changes
                .into_iter()
                .map(|c| pb::CatalogChange { change: Some(c) })
                .collect(),
        }
    }

    #[test]
    fn deltas_apply_in_order_and_refuse_gaps() {
        let v0 = snapshot(
            5,
            vec![pb::CatalogEntry {
                entry: Some(pb::catalog_entry::Entry::Revocation(session_rev(
                    "rev-4", "s1",
                ))),
            }],
        )
        .expect("snapshot");
        assert!(v0.revocations.session_revoked("s1", "corp", "alice", 0, 9));
        let v1 = apply(
            &v0,
            &delta(
                6,
                5,
                vec![pb::catalog_change::Change::RevocationAdded(session_rev(
                    "rev-6", "s2",
                ))],
            ),
        )
        .expect("delta");
        assert!(v1.revocations.session_revoked("s2", "", "", 0, 9));
        assert!(
            !v0.revocations.session_revoked("s2", "", "", 0, 9),
            "the old view is untouched"
        );
        assert!(matches!(
            apply(&v1, &delta(8, 7, vec![])),
            Err(ReplicaError::Discontinuous { .. })
        ));
        assert!(
            matches!(
                apply(&v1, &delta(6, 5, vec![])),
                Err(ReplicaError::Discontinuous { .. })
            ),
            "duplicate"
        );
        let v2 = apply(
            &v1,
            &delta(
                7,
                6,
                vec![pb::catalog_change::Change::RevocationExpired(
                    "rev-4".into(),
                )],
            ),
        )
        .expect("expire");
        assert!(!v2.revocations.session_revoked("s1", "", "", 0, 9));
        assert_eq!(v2.revision, 7);
    }

    /// A wire user revocation arrives with its user, time and revision (what they mean for a
    /// session is `palisade_edge_core::view`'s to test).
    #[test]
    fn user_revocations_arrive_with_their_user_time_and_revision() {
        let user = |revision: u64, issued_before: Option<i64>| pb::CatalogEntry {
            entry: Some(pb::catalog_entry::Entry::Revocation(pb::Revocation {
                id: format!("rev-{revision}"),
                revision,
                target: Some(pb::RevocationTarget {
                    target: Some(pb::revocation_target::Target::User(pb::UserRevocation {
                        subject: "alice".into(),
                        identity_provider: "corp".into(),
                        issued_before: issued_before
                            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                    })),
                }),
                ..Default::default()
            })),
        };
        let v = snapshot(20, vec![user(9, Some(1000)), user(20, None)]).expect("snapshot");
        let r = &v.revocations;
        assert!(r.session_revoked("s", "corp", "alice", 999, 9));
        assert!(!r.session_revoked("s", "corp", "bob", 999, 9));
        // the second one (no time) covers every session issued before revision 20
        assert!(r.session_revoked("s", "corp", "alice", 4_000_000_000, 19));
        assert!(!r.session_revoked("s", "corp", "alice", 1000, 20));
    }

    #[test]
    fn factors_are_found_by_user() {
        let f = |id: &str, sub: &str| pb::Factor {
            id: id.into(),
            subject: sub.into(),
            identity_provider: "corp".into(),
            kind: pb::FactorKind::Totp as i32,
            ..Default::default()
        };
        let user = |sub: &str| palisade_policy::catalog::UserKey {
            provider: "corp".into(),
            subject: sub.into(),
        };
        let v = snapshot(
            1,
            vec![
                pb::CatalogEntry {
                    entry: Some(pb::catalog_entry::Entry::Factor(f("fac-1", "alice"))),
                },
                pb::CatalogEntry {
                    entry: Some(pb::catalog_entry::Entry::Factor(f("fac-2", "bob"))),
                },
            ],
        )
        .expect("snapshot");
        assert_eq!(v.user_factors(&user("alice")).len(), 1);
        let v = apply(
            &v,
            &delta(
                2,
                1,
                vec![
                    pb::catalog_change::Change::FactorRemoved("fac-1".into()),
                    pb::catalog_change::Change::FactorUpserted(f("fac-3", "alice")),
                ],
            ),
        )
        .expect("delta");
        let ids: Vec<&str> = v
            .user_factors(&user("alice"))
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(ids, ["fac-3"]);
        assert!(v.user_factors(&user("carol")).is_empty());
    }

    /// What an edge cannot use is refused at the boundary, and the view kept.
    #[test]
    fn unconvertible_objects_are_refused() {
        let v = snapshot(1, vec![]).expect("empty");
        let unknown_kind = pb::Factor {
            id: "fac-2".into(),
            kind: 42,
            ..Default::default()
        };
        let keyless = pb::Factor {
            id: "fac-3".into(),
            kind: pb::FactorKind::SecurityKey as i32,
            ..Default::default()
        };
        let stateless = pb::Device {
            id: "dev-4".into(),
            ..Default::default()
        };
        for change in [
            pb::catalog_change::Change::FactorUpserted(unknown_kind),
            pb::catalog_change::Change::FactorUpserted(keyless),
            pb::catalog_change::Change::DeviceUpserted(stateless),
        ] {
            let err = apply(&v, &delta(2, 1, vec![change])).expect_err("refused");
            assert!(matches!(err, ReplicaError::Invalid { .. }), "{err}");
        }
        assert_eq!(v.revision, 1);
    }

    #[test]
    fn webauthn_credential_ids_arrive_as_text() {
        let f = |id: &[u8]| pb::Factor {
            id: "fac-1".into(),
            kind: pb::FactorKind::SecurityKey as i32,
            webauthn: Some(pb::WebauthnCredential {
                credential_id: id.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = crate::sync::convert::factor(&f(b"AAEC")).expect("text id");
        assert_eq!(got.credential_id, "AAEC");
        let got = crate::sync::convert::factor(&f(&[0, 1, 0xff])).expect("raw id");
        assert_eq!(got.credential_id, "AAH_");
    }

    #[test]
    fn a_bad_policy_is_refused_and_the_view_kept() {
        let bad = pb::PolicyVersion {
            version: 3,
            document_json: "{\"schema_version\": 1, \"apps\": [{}]}".into(),
            ..Default::default()
        };
        let v = snapshot(1, vec![]).expect("empty");
        let err = apply(
            &v,
            &delta(2, 1, vec![pb::catalog_change::Change::PolicyApplied(bad)]),
        )
        .expect_err("bad policy");
        assert!(
            matches!(err, ReplicaError::BadPolicy { version: 3, .. }),
            "{err}"
        );
        assert_eq!(v.revision, 1);
    }
}
