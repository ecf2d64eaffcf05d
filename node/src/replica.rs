//! The edge's replica of the catalog, and the immutable `View` that every request reads.
//!
//! A `View` is built from a snapshot and advanced by deltas. It uses persistent maps (`imbl`),
//! so producing the next view after a delta shares everything that did not change: applying a
//! revocation to a view holding a million of them costs a few allocations, not a copy. Views
//! are swapped atomically (`arc_swap`): readers never block and never see a half-applied delta.
//!
//! Anything that fails validation (a malformed policy, a key that is too short, a delta that
//! does not follow the applied revision) is refused with a `ReplicaError`; the caller keeps the
//! last good view.

use std::sync::Arc;

use imbl::{HashMap, HashSet};
use palisade_policy::CompiledPolicy;
use palisade_policy::token::{KeyRing, SigningKey};
use palisade_proto::v1 as pb;

/// Why a snapshot or delta was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The delta does not follow the applied revision.
    #[error("delta {revision} follows {prev} but the replica is at {applied}")]
    Discontinuous {
        /// The delta's revision.
        revision: u64,
        /// The revision it claims to follow.
        prev: u64,
        /// The replica's revision.
        applied: u64,
    },
    /// A snapshot's end does not match its beginning, or entries are missing.
    #[error("snapshot is inconsistent: {0}")]
    BadSnapshot(String),
    /// The policy document in the catalog does not validate at this edge.
    #[error("policy version {version} does not validate at this edge: {reason}")]
    BadPolicy {
        /// Its version.
        version: u64,
        /// The first violations.
        reason: String,
    },
    /// An object is missing a required field.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// What revocations are in force, indexed for the request path.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Revocation id → target, to remove expired ones.
    by_id: HashMap<String, pb::revocation_target::Target>,
    /// Revoked session ids (with how many revocations name them).
    sessions: HashMap<String, u32>,
    /// Per user (`provider\0subject`): revocation id → (the revocation's revision, sessions
    /// issued before this time (unix seconds), 0 for none).
    users: HashMap<String, HashMap<String, (u64, i64)>>,
    /// Revoked device ids.
    devices: HashMap<String, u32>,
    /// Revoked factor ids.
    factors: HashMap<String, u32>,
    /// Revoked tunnel sessions.
    tunnels: HashMap<String, u32>,
}

fn user_key(provider: &str, subject: &str) -> String {
    format!("{provider}\u{0}{subject}")
}

fn inc(m: &mut HashMap<String, u32>, k: &str) {
    *m.entry(k.to_string()).or_insert(0) += 1;
}

fn dec(m: &mut HashMap<String, u32>, k: &str) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl Revocations {
    fn add(&mut self, r: &pb::Revocation) -> Result<(), ReplicaError> {
        use pb::revocation_target::Target as T;
        let target = r
            .target
            .clone()
            .and_then(|t| t.target)
            .ok_or(ReplicaError::Malformed("revocation"))?;
        if self.by_id.contains_key(&r.id) {
            return Ok(());
        }
        match &target {
            T::SessionId(s) => inc(&mut self.sessions, s),
            T::DeviceId(d) => inc(&mut self.devices, d),
            T::FactorId(f) => inc(&mut self.factors, f),
            T::TunnelSessionId(t) => inc(&mut self.tunnels, t),
            T::User(u) => {
                if r.revision == 0 {
                    return Err(ReplicaError::Malformed(
                        "user revocation without a revision",
                    ));
                }
                let before = u.issued_before.map(|t| t.seconds).unwrap_or(0);
                self.users
                    .entry(user_key(&u.identity_provider, &u.subject))
                    .or_default()
                    .insert(r.id.clone(), (r.revision, before));
            }
        }
        self.by_id.insert(r.id.clone(), target);
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        use pb::revocation_target::Target as T;
        let Some(target) = self.by_id.remove(id) else {
            return;
        };
        match &target {
            T::SessionId(s) => dec(&mut self.sessions, s),
            T::DeviceId(d) => dec(&mut self.devices, d),
            T::FactorId(f) => dec(&mut self.factors, f),
            T::TunnelSessionId(t) => dec(&mut self.tunnels, t),
            T::User(u) => {
                let k = user_key(&u.identity_provider, &u.subject);
                if let Some(m) = self.users.get_mut(&k) {
                    m.remove(id);
                    if m.is_empty() {
                        self.users.remove(&k);
                    }
                }
            }
        }
    }

    /// Number of revocations in force.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when none is in force.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether a session is revoked: by id, or by a user revocation that covers it. A user
    /// revocation covers every session issued by an edge that had not yet applied it
    /// (`issued_rev` below its revision: one clock, the Raft log), and, when it names a time,
    /// every session issued before that time.
    pub fn session_revoked(
        &self,
        session_id: &str,
        provider: &str,
        subject: &str,
        issued_at: i64,
        issued_rev: u64,
    ) -> bool {
        self.sessions.contains_key(session_id)
            || self
                .users
                .get(&user_key(provider, subject))
                .is_some_and(|m| {
                    m.values()
                        .any(|(revision, before)| issued_rev < *revision || issued_at < *before)
                })
    }

    /// Whether a device is revoked.
    pub fn device_revoked(&self, id: &str) -> bool {
        self.devices.contains_key(id)
    }

    /// Whether a factor is revoked.
    pub fn factor_revoked(&self, id: &str) -> bool {
        self.factors.contains_key(id)
    }
}

/// An immutable view of the catalog at one revision.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The revision this view reflects.
    pub revision: u64,
    /// The current policy, compiled, with its version; `None` before any policy was applied.
    pub policy: Option<(u64, Arc<CompiledPolicy>)>,
    /// Revocations in force.
    pub revocations: Revocations,
    /// Devices by id.
    pub devices: HashMap<String, pb::Device>,
    /// Usable factors by id (public parts).
    pub factors: HashMap<String, pb::Factor>,
    /// Factor ids by user (`provider\0subject`), so a user's factors are found without
    /// scanning everyone's.
    pub factors_by_user: HashMap<String, HashSet<String>>,
    /// Signing keys by kid.
    pub signing_keys: HashMap<String, pb::SigningKey>,
    /// Signing keys as a key ring, rebuilt when a key changes.
    pub keyring: Arc<KeyRing>,
    /// Named secrets.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Per-user counters (`provider\0subject`).
    pub counters: HashMap<String, pb::UserCounters>,
}

fn compile(p: &pb::PolicyVersion) -> Result<(u64, Arc<CompiledPolicy>), ReplicaError> {
    CompiledPolicy::from_json(&p.document_json)
        .map(|(_, c)| (p.version, Arc::new(c)))
        .map_err(|v| ReplicaError::BadPolicy {
            version: p.version,
            reason: v
                .0
                .iter()
                .take(3)
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
}

impl View {
    /// A user's usable factors, oldest first.
    pub fn user_factors(&self, provider: &str, subject: &str) -> Vec<&pb::Factor> {
        let mut v: Vec<&pb::Factor> = self
            .factors_by_user
            .get(&user_key(provider, subject))
            .into_iter()
            .flat_map(|ids| ids.iter().filter_map(|id| self.factors.get(id)))
            .filter(|f| !f.pending && !self.revocations.factor_revoked(&f.id))
            .collect();
        v.sort_by_key(|f| (f.created_at.map(|t| t.seconds).unwrap_or(0), f.id.clone()));
        v
    }

    fn put_factor(&mut self, f: pb::Factor) {
        self.drop_factor(&f.id);
        self.factors_by_user
            .entry(user_key(&f.identity_provider, &f.subject))
            .or_default()
            .insert(f.id.clone());
        self.factors.insert(f.id.clone(), f);
    }

    fn drop_factor(&mut self, id: &str) {
        if let Some(old) = self.factors.remove(id) {
            let k = user_key(&old.identity_provider, &old.subject);
            if let Some(set) = self.factors_by_user.get_mut(&k) {
                set.remove(id);
                if set.is_empty() {
                    self.factors_by_user.remove(&k);
                }
            }
        }
    }

    fn rebuild_keyring(&mut self) {
        self.keyring = Arc::new(KeyRing::new(self.signing_keys.values().map(|k| {
            SigningKey {
                kid: k.kid.clone(),
                secret: k.secret.clone(),
                active: k.state == pb::SigningKeyState::Active as i32,
            }
        })));
    }

    /// Builds a view from a complete snapshot at `revision`.
    pub fn from_snapshot(
        revision: u64,
        entries: Vec<pb::CatalogEntry>,
    ) -> Result<View, ReplicaError> {
        use pb::catalog_entry::Entry as E;
        let mut v = View {
            revision,
            ..View::default()
        };
        for e in entries {
            match e.entry.ok_or(ReplicaError::Malformed("snapshot entry"))? {
                E::Policy(p) => v.policy = Some(compile(&p)?),
                E::Revocation(r) => v.revocations.add(&r)?,
                E::Device(d) => {
                    v.devices.insert(d.id.clone(), d);
                }
                E::Factor(f) => v.put_factor(f),
                E::SigningKey(k) => {
                    v.signing_keys.insert(k.kid.clone(), k);
                }
                E::Secret(s) => {
                    v.secrets.insert(s.name, s.value);
                }
                E::Counters(c) => {
                    v.counters
                        .insert(user_key(&c.identity_provider, &c.subject), c);
                }
                E::TunnelSession(_) => {}
            }
        }
        v.rebuild_keyring();
        Ok(v)
    }

    /// The view after `delta`, or why it was refused (this view stays as it is).
    pub fn apply(&self, delta: &pb::CatalogDelta) -> Result<View, ReplicaError> {
        use pb::catalog_change::Change as C;
        if delta.prev_revision != self.revision || delta.revision <= self.revision {
            return Err(ReplicaError::Discontinuous {
                revision: delta.revision,
                prev: delta.prev_revision,
                applied: self.revision,
            });
        }
        let mut v = self.clone();
        let mut keys_changed = false;
        for c in &delta.changes {
            match c
                .change
                .as_ref()
                .ok_or(ReplicaError::Malformed("delta change"))?
            {
                C::PolicyApplied(p) => v.policy = Some(compile(p)?),
                C::RevocationAdded(r) => v.revocations.add(r)?,
                C::RevocationExpired(id) => v.revocations.remove(id),
                C::DeviceUpserted(d) => {
                    v.devices.insert(d.id.clone(), d.clone());
                }
                C::DeviceRemoved(id) => {
                    v.devices.remove(id);
                }
                C::FactorUpserted(f) => v.put_factor(f.clone()),
                C::FactorRemoved(id) => v.drop_factor(id),
                C::SigningKeyUpserted(k) => {
                    v.signing_keys.insert(k.kid.clone(), k.clone());
                    keys_changed = true;
                }
                C::SigningKeyRemoved(kid) => {
                    v.signing_keys.remove(kid);
                    keys_changed = true;
                }
                C::SecretUpserted(s) => {
                    v.secrets.insert(s.name.clone(), s.value.clone());
                }
                C::SecretRemoved(name) => {
                    v.secrets.remove(name);
                }
                C::CountersUpdated(c) => {
                    v.counters
                        .insert(user_key(&c.identity_provider, &c.subject), c.clone());
                }
                C::TunnelSessionUpserted(_) | C::TunnelSessionRemoved(_) => {}
            }
        }
        if keys_changed {
            v.rebuild_keyring();
        }
        v.revision = delta.revision;
        Ok(v)
    }
}

/// Session ids revoked in a view (for tests and diagnostics).
pub fn revoked_session_ids(v: &View) -> HashSet<String> {
    v.revocations.sessions.keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v0 = View::from_snapshot(
            5,
            vec![pb::CatalogEntry {
                entry: Some(pb::catalog_entry::Entry::Revocation(session_rev(
                    "rev-4", "s1",
                ))),
            }],
        )
        .expect("snapshot");
        assert!(v0.revocations.session_revoked("s1", "corp", "alice", 0, 9));
        let v1 = v0
            .apply(&delta(
                6,
                5,
                vec![pb::catalog_change::Change::RevocationAdded(session_rev(
                    "rev-6", "s2",
                ))],
            ))
            .expect("delta");
        assert!(v1.revocations.session_revoked("s2", "", "", 0, 9));
        assert!(
            !v0.revocations.session_revoked("s2", "", "", 0, 9),
            "the old view is untouched"
        );
        assert!(matches!(
            v1.apply(&delta(8, 7, vec![])),
            Err(ReplicaError::Discontinuous { .. })
        ));
        assert!(
            matches!(
                v1.apply(&delta(6, 5, vec![])),
                Err(ReplicaError::Discontinuous { .. })
            ),
            "duplicate"
        );
        let v2 = v1
            .apply(&delta(
                7,
                6,
                vec![pb::catalog_change::Change::RevocationExpired(
                    "rev-4".into(),
                )],
            ))
            .expect("expire");
        assert!(!v2.revocations.session_revoked("s1", "", "", 0, 9));
        assert_eq!(v2.revision, 7);
    }

    #[test]
    fn user_revocations_cover_sessions_issued_before() {
        let r = pb::Revocation {
            id: "rev-9".into(),
            revision: 9,
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::User(pb::UserRevocation {
                    subject: "alice".into(),
                    identity_provider: "corp".into(),
                    issued_before: Some(prost_types::Timestamp {
                        seconds: 1000,
                        nanos: 0,
                    }),
                })),
            }),
            ..Default::default()
        };
        let v = View::from_snapshot(
            9,
            vec![pb::CatalogEntry {
                entry: Some(pb::catalog_entry::Entry::Revocation(r)),
            }],
        )
        .expect("snapshot");
        // Issued by an edge that had applied the revocation (revision 9 or later): only the
        // time counts.
        assert!(
            v.revocations
                .session_revoked("any", "corp", "alice", 999, 9)
        );
        assert!(
            !v.revocations
                .session_revoked("any", "corp", "alice", 1000, 9)
        );
        assert!(!v.revocations.session_revoked("any", "corp", "bob", 1, 0));
    }

    /// A user revocation does not depend on clocks: a session issued by an edge that had not
    /// applied it yet is covered whatever its issue time says (an edge clock ahead of the
    /// admin's, review finding L4), and one issued after it is not.
    #[test]
    fn user_revocations_go_by_revision_not_clocks() {
        let r = pb::Revocation {
            id: "rev-20".into(),
            revision: 20,
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::User(pb::UserRevocation {
                    subject: "alice".into(),
                    identity_provider: "corp".into(),
                    issued_before: None,
                })),
            }),
            ..Default::default()
        };
        let v = View::from_snapshot(
            20,
            vec![pb::CatalogEntry {
                entry: Some(pb::catalog_entry::Entry::Revocation(r)),
            }],
        )
        .expect("snapshot");
        let far_future = 4_000_000_000;
        assert!(
            v.revocations
                .session_revoked("s", "corp", "alice", far_future, 19)
        );
        assert!(
            v.revocations
                .session_revoked("s", "corp", "alice", far_future, 0)
        );
        assert!(!v.revocations.session_revoked("s", "corp", "alice", 1, 20));
    }

    #[test]
    fn factors_are_found_by_user() {
        let f = |id: &str, sub: &str| pb::Factor {
            id: id.into(),
            subject: sub.into(),
            identity_provider: "corp".into(),
            ..Default::default()
        };
        let v = View::from_snapshot(
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
        assert_eq!(v.user_factors("corp", "alice").len(), 1);
        let v = v
            .apply(&delta(
                2,
                1,
                vec![
                    pb::catalog_change::Change::FactorRemoved("fac-1".into()),
                    pb::catalog_change::Change::FactorUpserted(f("fac-3", "alice")),
                ],
            ))
            .expect("delta");
        let ids: Vec<&str> = v
            .user_factors("corp", "alice")
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(ids, ["fac-3"]);
        assert!(v.user_factors("corp", "carol").is_empty());
    }

    #[test]
    fn a_bad_policy_is_refused_and_the_view_kept() {
        let bad = pb::PolicyVersion {
            version: 3,
            document_json: "{\"schema_version\": 1, \"apps\": [{}]}".into(),
            ..Default::default()
        };
        let v = View::from_snapshot(1, vec![]).expect("empty");
        let err = v
            .apply(&delta(
                2,
                1,
                vec![pb::catalog_change::Change::PolicyApplied(bad)],
            ))
            .expect_err("bad policy");
        assert!(
            matches!(err, ReplicaError::BadPolicy { version: 3, .. }),
            "{err}"
        );
        assert_eq!(v.revision, 1);
    }
}
