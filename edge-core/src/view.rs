//! The edge's replica of the catalog, and the immutable `View` that every request reads.
//!
//! A `View` is built from a snapshot and advanced by deltas. It holds the catalog's own domain
//! types; the sync client converts wire messages into [`Change`]s once, at the boundary, and
//! refuses what does not convert. It uses persistent maps (`imbl`), so producing the next view
//! after a delta shares everything that did not change: applying a revocation to a view holding
//! a million of them costs a few allocations, not a copy. The sync client swaps views
//! atomically: readers never block and never see a half-applied delta.
//!
//! Anything that fails validation (a malformed policy, a delta that does not follow the applied
//! revision, a user revocation without a revision) is refused with a `ReplicaError`; the caller
//! keeps the last good view.

use std::fmt;
use std::sync::Arc;

use imbl::{HashMap, HashSet};
use palisade_policy::CompiledPolicy;
use palisade_policy::catalog::{
    Counters, DeviceRecord, DeviceState, FactorRecord, RevocationTarget, TunnelSessionRecord,
    UserKey,
};
use palisade_policy::token::{KeyRing, SigningKey};

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
    /// An object's field holds a value this edge cannot use (an unknown enum value, a
    /// credential id that is not text, a timestamp out of range).
    #[error("invalid {what} {id:?}: {reason}")]
    Invalid {
        /// What kind of object.
        what: &'static str,
        /// Its id.
        id: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One change to the replica, already converted from the wire. A snapshot is a list of
/// upserts; a delta is any list of changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The current policy document.
    PolicyApplied {
        /// Its version.
        version: u64,
        /// The document, compiled by the view.
        document_json: String,
    },
    /// A revocation is in force.
    RevocationAdded {
        /// `rev-<revision>`.
        id: String,
        /// The revision that revoked (user revocations compare sessions with it).
        revision: u64,
        /// What is revoked.
        target: RevocationTarget,
    },
    /// A revocation expired.
    RevocationExpired(String),
    /// A device was created or changed.
    DeviceUpserted(DeviceRecord),
    /// A device was removed.
    DeviceRemoved(String),
    /// A factor was added or changed (public part only).
    FactorUpserted(FactorRecord),
    /// A factor was removed.
    FactorRemoved(String),
    /// A session signing key was added or changed.
    SigningKeyUpserted(SigningKey),
    /// A signing key was retired.
    SigningKeyRemoved(String),
    /// A named secret (an identity provider's client secret) was set.
    SecretUpserted {
        /// Its name.
        name: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// A named secret was removed.
    SecretRemoved(String),
    /// A user's MFA counters changed.
    CountersUpdated(UserKey, Counters),
    /// The device CA (certificate, PEM).
    DeviceCaSet(String),
    /// A tunnel session was opened.
    TunnelSessionUpserted(TunnelSessionRecord),
    /// A tunnel session was closed, replaced or expired.
    TunnelSessionRemoved(String),
}

/// A delta: the changes of the revisions after `prev_revision` up to `revision`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The revision after the delta.
    pub revision: u64,
    /// The revision it follows.
    pub prev_revision: u64,
    /// What changed.
    pub changes: Vec<Change>,
}

/// What revocations are in force, indexed for the request path.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Revocation id → target, to remove expired ones.
    by_id: HashMap<String, RevocationTarget>,
    /// Revoked session ids (with how many revocations name them).
    sessions: HashMap<String, u32>,
    /// Per user: revocation id → (the revocation's revision, sessions issued before this time
    /// (unix seconds), 0 for none).
    users: HashMap<UserKey, HashMap<String, (u64, i64)>>,
    /// Revoked device ids.
    devices: HashMap<String, u32>,
    /// Revoked factor ids.
    factors: HashMap<String, u32>,
    /// Revoked tunnel sessions.
    tunnels: HashMap<String, u32>,
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
    fn add(
        &mut self,
        id: &str,
        revision: u64,
        target: &RevocationTarget,
    ) -> Result<(), ReplicaError> {
        if self.by_id.contains_key(id) {
            return Ok(());
        }
        match target {
            RevocationTarget::Session(s) => inc(&mut self.sessions, s),
            RevocationTarget::Device(d) => inc(&mut self.devices, d),
            RevocationTarget::Factor(f) => inc(&mut self.factors, f),
            RevocationTarget::TunnelSession(t) => inc(&mut self.tunnels, t),
            RevocationTarget::User {
                user,
                issued_before,
            } => {
                if revision == 0 {
                    return Err(ReplicaError::Malformed(
                        "user revocation without a revision",
                    ));
                }
                self.users
                    .entry(user.clone())
                    .or_default()
                    .insert(id.to_string(), (revision, *issued_before));
            }
        }
        self.by_id.insert(id.to_string(), target.clone());
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        let Some(target) = self.by_id.remove(id) else {
            return;
        };
        match &target {
            RevocationTarget::Session(s) => dec(&mut self.sessions, s),
            RevocationTarget::Device(d) => dec(&mut self.devices, d),
            RevocationTarget::Factor(f) => dec(&mut self.factors, f),
            RevocationTarget::TunnelSession(t) => dec(&mut self.tunnels, t),
            RevocationTarget::User { user, .. } => {
                if let Some(m) = self.users.get_mut(user) {
                    m.remove(id);
                    if m.is_empty() {
                        self.users.remove(user);
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
        if self.sessions.contains_key(session_id) {
            return true;
        }
        if self.users.is_empty() {
            return false;
        }
        let user = UserKey {
            provider: provider.to_string(),
            subject: subject.to_string(),
        };
        self.users.get(&user).is_some_and(|m| {
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

    /// Whether a tunnel session is revoked.
    pub fn tunnel_revoked(&self, id: &str) -> bool {
        self.tunnels.contains_key(id)
    }

    /// Session ids revoked by id (for tests and diagnostics).
    pub fn revoked_session_ids(&self) -> HashSet<String> {
        self.sessions.keys().cloned().collect()
    }
}

/// An immutable view of the catalog at one revision. `Debug` leaves out secrets.
#[derive(Clone, Default)]
pub struct View {
    /// The revision this view reflects.
    pub revision: u64,
    /// The current policy, compiled, with its version; `None` before any policy was applied.
    pub policy: Option<(u64, Arc<CompiledPolicy>)>,
    /// Revocations in force.
    pub revocations: Revocations,
    /// Devices by id.
    pub devices: HashMap<String, DeviceRecord>,
    /// Factors by id (public parts; pending TOTP factors included).
    pub factors: HashMap<String, FactorRecord>,
    /// Factor ids by user, so a user's factors are found without scanning everyone's.
    factors_by_user: HashMap<UserKey, HashSet<String>>,
    /// Signing keys by kid.
    signing_keys: HashMap<String, SigningKey>,
    /// Signing keys as a key ring, rebuilt when a key changes.
    pub keyring: Arc<KeyRing>,
    /// Named secrets (`Debug` of the view shows only how many).
    pub secrets: HashMap<String, Vec<u8>>,
    /// Per-user counters.
    counters: HashMap<UserKey, Counters>,
    /// The device CA certificate (PEM), once the cluster has one.
    pub device_ca: Option<String>,
    /// Tunnel sessions by id.
    pub tunnel_sessions: HashMap<String, TunnelSessionRecord>,
}

/// Why a tunnel session does not let a device through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRefusal {
    /// No such tunnel session (never opened, closed, replaced or collected).
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked: the tunnel session, its SSO session, its user or its device.
    Revoked,
    /// Its device is no longer enrolled (wiped, revoked).
    DeviceGone,
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("revision", &self.revision)
            .field("policy_version", &self.policy.as_ref().map(|(v, _)| *v))
            .field("revocations", &self.revocations.len())
            .field("devices", &self.devices.len())
            .field("factors", &self.factors.len())
            .field("signing_keys", &self.signing_keys.len())
            .field("secrets", &self.secrets.len())
            .field("tunnel_sessions", &self.tunnel_sessions.len())
            .finish_non_exhaustive()
    }
}

fn compile(version: u64, document_json: &str) -> Result<(u64, Arc<CompiledPolicy>), ReplicaError> {
    CompiledPolicy::from_json(document_json)
        .map(|(_, c)| (version, Arc::new(c)))
        .map_err(|v| ReplicaError::BadPolicy {
            version,
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
    /// Builds a view from a complete snapshot at `revision`.
    pub fn from_snapshot(
        revision: u64,
        entries: impl IntoIterator<Item = Change>,
    ) -> Result<View, ReplicaError> {
        let mut v = View {
            revision,
            ..View::default()
        };
        v.apply_changes(entries)?;
        v.rebuild_keyring();
        Ok(v)
    }

    /// The view after `delta`, or why it was refused (this view stays as it is).
    pub fn apply(&self, delta: Delta) -> Result<View, ReplicaError> {
        if delta.prev_revision != self.revision || delta.revision <= self.revision {
            return Err(ReplicaError::Discontinuous {
                revision: delta.revision,
                prev: delta.prev_revision,
                applied: self.revision,
            });
        }
        let mut v = self.clone();
        if v.apply_changes(delta.changes)? {
            v.rebuild_keyring();
        }
        v.revision = delta.revision;
        Ok(v)
    }

    /// Applies changes in order; true when a signing key changed.
    fn apply_changes(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<bool, ReplicaError> {
        let mut keys_changed = false;
        for c in changes {
            match c {
                Change::PolicyApplied {
                    version,
                    document_json,
                } => self.policy = Some(compile(version, &document_json)?),
                Change::RevocationAdded {
                    id,
                    revision,
                    target,
                } => self.revocations.add(&id, revision, &target)?,
                Change::RevocationExpired(id) => self.revocations.remove(&id),
                Change::DeviceUpserted(d) => {
                    self.devices.insert(d.id.clone(), d);
                }
                Change::DeviceRemoved(id) => {
                    self.devices.remove(&id);
                }
                Change::FactorUpserted(f) => self.put_factor(f),
                Change::FactorRemoved(id) => self.drop_factor(&id),
                Change::SigningKeyUpserted(k) => {
                    self.signing_keys.insert(k.kid.clone(), k);
                    keys_changed = true;
                }
                Change::SigningKeyRemoved(kid) => {
                    self.signing_keys.remove(&kid);
                    keys_changed = true;
                }
                Change::SecretUpserted { name, value } => {
                    self.secrets.insert(name, value);
                }
                Change::SecretRemoved(name) => {
                    self.secrets.remove(&name);
                }
                Change::CountersUpdated(user, c) => {
                    self.counters.insert(user, c);
                }
                Change::DeviceCaSet(pem) => self.device_ca = Some(pem),
                Change::TunnelSessionUpserted(t) => {
                    self.tunnel_sessions.insert(t.id.clone(), t);
                }
                Change::TunnelSessionRemoved(id) => {
                    self.tunnel_sessions.remove(&id);
                }
            }
        }
        Ok(keys_changed)
    }

    /// The tunnel session `id` if it lets its device through at `now_ms`: it exists, has not
    /// expired, and neither it, its SSO session, its user (after it was opened) nor its device
    /// is revoked, and its device is still enrolled.
    pub fn live_tunnel(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<&TunnelSessionRecord, TunnelRefusal> {
        let t = self.tunnel_sessions.get(id).ok_or(TunnelRefusal::Unknown)?;
        if t.expires_at_ms <= now_ms {
            return Err(TunnelRefusal::Expired);
        }
        if self.revocations.tunnel_revoked(id)
            || self.revocations.device_revoked(&t.device_id)
            || self.revocations.session_revoked(
                &t.session_id,
                &t.user.provider,
                &t.user.subject,
                t.opened_at_ms / 1000,
                t.revision,
            )
        {
            return Err(TunnelRefusal::Revoked);
        }
        match self.devices.get(&t.device_id) {
            Some(d) if d.state == DeviceState::Enrolled => Ok(t),
            _ => Err(TunnelRefusal::DeviceGone),
        }
    }

    /// A user's usable factors (active, not revoked), oldest first.
    pub fn user_factors(&self, user: &UserKey) -> Vec<&FactorRecord> {
        let mut v: Vec<&FactorRecord> = self
            .factors_by_user
            .get(user)
            .into_iter()
            .flat_map(|ids| ids.iter().filter_map(|id| self.factors.get(id)))
            .filter(|f| f.usable() && !self.revocations.factor_revoked(&f.id))
            .collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        v
    }

    /// A factor that can stand behind an MFA assertion of `user` now: it exists, belongs to
    /// that user, is usable and is not revoked. Removing or revoking a factor ends the
    /// assertions issued with it.
    pub fn usable_factor(&self, user: &UserKey, factor_id: &str) -> Option<&FactorRecord> {
        self.factors
            .get(factor_id)
            .filter(|f| f.usable() && f.user == *user && !self.revocations.factor_revoked(&f.id))
    }

    /// A user's MFA counters (all zero if none were recorded).
    pub fn counters(&self, user: &UserKey) -> Counters {
        self.counters.get(user).cloned().unwrap_or_default()
    }

    /// A named secret.
    pub fn secret(&self, name: &str) -> Option<&[u8]> {
        self.secrets.get(name).map(Vec::as_slice)
    }

    /// The current policy, if any was applied.
    pub fn compiled_policy(&self) -> Option<&Arc<CompiledPolicy>> {
        self.policy.as_ref().map(|(_, p)| p)
    }

    fn put_factor(&mut self, f: FactorRecord) {
        self.drop_factor(&f.id);
        self.factors_by_user
            .entry(f.user.clone())
            .or_default()
            .insert(f.id.clone());
        self.factors.insert(f.id.clone(), f);
    }

    fn drop_factor(&mut self, id: &str) {
        if let Some(old) = self.factors.remove(id)
            && let Some(set) = self.factors_by_user.get_mut(&old.user)
        {
            set.remove(id);
            if set.is_empty() {
                self.factors_by_user.remove(&old.user);
            }
        }
    }

    fn rebuild_keyring(&mut self) {
        self.keyring = Arc::new(KeyRing::new(self.signing_keys.values().cloned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{factor, user};
    use palisade_policy::catalog::FactorKind;

    fn session_rev(id: &str, sid: &str) -> Change {
        Change::RevocationAdded {
            id: id.into(),
            revision: 0,
            target: RevocationTarget::Session(sid.into()),
        }
    }

    fn delta(revision: u64, prev_revision: u64, changes: Vec<Change>) -> Delta {
        Delta {
            revision,
            prev_revision,
            changes,
        }
    }

    #[test]
    fn deltas_apply_in_order_and_refuse_gaps() {
        let v0 = View::from_snapshot(5, [session_rev("rev-4", "s1")]).expect("snapshot");
        assert!(v0.revocations.session_revoked("s1", "corp", "alice", 0, 9));
        let v1 = v0
            .apply(delta(6, 5, vec![session_rev("rev-6", "s2")]))
            .expect("delta");
        assert!(v1.revocations.session_revoked("s2", "", "", 0, 9));
        assert!(
            !v0.revocations.session_revoked("s2", "", "", 0, 9),
            "the old view is untouched"
        );
        assert!(matches!(
            v1.apply(delta(8, 7, vec![])),
            Err(ReplicaError::Discontinuous { .. })
        ));
        assert!(
            matches!(
                v1.apply(delta(6, 5, vec![])),
                Err(ReplicaError::Discontinuous { .. })
            ),
            "duplicate"
        );
        let v2 = v1
            .apply(delta(7, 6, vec![Change::RevocationExpired("rev-4".into())]))
            .expect("expire");
        assert!(!v2.revocations.session_revoked("s1", "", "", 0, 9));
        assert_eq!(v2.revision, 7);
    }

    fn user_revocation(revision: u64, issued_before: i64) -> Change {
        Change::RevocationAdded {
            id: format!("rev-{revision}"),
            revision,
            target: RevocationTarget::User {
                user: user("alice"),
                issued_before,
            },
        }
    }

    #[test]
    fn user_revocations_cover_sessions_issued_before() {
        let v = View::from_snapshot(9, [user_revocation(9, 1000)]).expect("snapshot");
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
        let v = View::from_snapshot(20, [user_revocation(20, 0)]).expect("snapshot");
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
    fn a_user_revocation_without_a_revision_is_refused() {
        let err = View::from_snapshot(9, [user_revocation(0, 0)]).expect_err("refused");
        assert!(matches!(err, ReplicaError::Malformed(_)), "{err}");
    }

    #[test]
    fn factors_are_found_by_user() {
        let v = View::from_snapshot(
            1,
            [
                Change::FactorUpserted(factor("fac-1", "alice", FactorKind::Totp)),
                Change::FactorUpserted(factor("fac-2", "bob", FactorKind::Totp)),
            ],
        )
        .expect("snapshot");
        assert_eq!(v.user_factors(&user("alice")).len(), 1);
        let v = v
            .apply(delta(
                2,
                1,
                vec![
                    Change::FactorRemoved("fac-1".into()),
                    Change::FactorUpserted(factor("fac-3", "alice", FactorKind::SecurityKey)),
                ],
            ))
            .expect("delta");
        let ids: Vec<&str> = v
            .user_factors(&user("alice"))
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(ids, ["fac-3"]);
        assert!(v.user_factors(&user("carol")).is_empty());
        assert!(v.usable_factor(&user("alice"), "fac-3").is_some());
        assert!(
            v.usable_factor(&user("bob"), "fac-3").is_none(),
            "another user's factor"
        );
    }

    #[test]
    fn pending_and_revoked_factors_do_not_count() {
        let mut pending = factor("fac-1", "alice", FactorKind::Totp);
        pending.active = false;
        let v = View::from_snapshot(
            1,
            [
                Change::FactorUpserted(pending),
                Change::FactorUpserted(factor("fac-2", "alice", FactorKind::Platform)),
                Change::RevocationAdded {
                    id: "rev-1".into(),
                    revision: 1,
                    target: RevocationTarget::Factor("fac-2".into()),
                },
            ],
        )
        .expect("snapshot");
        assert!(v.user_factors(&user("alice")).is_empty());
        assert!(v.usable_factor(&user("alice"), "fac-1").is_none());
        assert!(v.usable_factor(&user("alice"), "fac-2").is_none());
        assert!(v.factors.contains_key("fac-1"), "pending factors are kept");
    }

    #[test]
    fn a_bad_policy_is_refused_and_the_view_kept() {
        let bad = Change::PolicyApplied {
            version: 3,
            document_json: "{\"schema_version\": 1, \"apps\": [{}]}".into(),
        };
        let v = View::from_snapshot(1, []).expect("empty");
        let err = v.apply(delta(2, 1, vec![bad])).expect_err("bad policy");
        assert!(
            matches!(err, ReplicaError::BadPolicy { version: 3, .. }),
            "{err}"
        );
        assert_eq!(v.revision, 1);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let v = View::from_snapshot(
            1,
            [Change::SecretUpserted {
                name: "idp".into(),
                value: b"hunter2-very-secret".to_vec(),
            }],
        )
        .expect("snapshot");
        assert_eq!(v.secret("idp"), Some(&b"hunter2-very-secret"[..]));
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_tunnel_session_counts_while_nothing_ends_it() {
        use crate::fixtures::{NOW, device, user};
        let now_ms = NOW * 1000;
        let tunnel = TunnelSessionRecord {
            id: "tun-8".into(),
            device_id: "dev-1".into(),
            user: user("alice"),
            session_id: "sid-1".into(),
            edge_id: "edge-1".into(),
            opened_at_ms: now_ms - 60_000,
            expires_at_ms: now_ms + 60_000,
            revision: 8,
        };
        let v = View::from_snapshot(
            9,
            [
                Change::DeviceUpserted(device()),
                Change::TunnelSessionUpserted(tunnel.clone()),
            ],
        )
        .expect("snapshot");
        assert_eq!(v.live_tunnel("tun-8", now_ms), Ok(&tunnel));
        assert_eq!(v.live_tunnel("tun-9", now_ms), Err(TunnelRefusal::Unknown));
        assert_eq!(
            v.live_tunnel("tun-8", now_ms + 60_000),
            Err(TunnelRefusal::Expired)
        );
        let revoked = |target| {
            v.apply(delta(
                10,
                9,
                vec![Change::RevocationAdded {
                    id: "rev-10".into(),
                    revision: 10,
                    target,
                }],
            ))
            .expect("delta")
        };
        for target in [
            RevocationTarget::TunnelSession("tun-8".into()),
            RevocationTarget::Session("sid-1".into()),
            RevocationTarget::Device("dev-1".into()),
            RevocationTarget::User {
                user: user("alice"),
                issued_before: 0,
            },
        ] {
            let after = revoked(target.clone());
            assert_eq!(
                after.live_tunnel("tun-8", now_ms),
                Err(TunnelRefusal::Revoked),
                "{target:?}"
            );
        }
        let mut wiped = device();
        wiped.state = DeviceState::Wiped;
        let after = v
            .apply(delta(10, 9, vec![Change::DeviceUpserted(wiped)]))
            .expect("delta");
        assert_eq!(
            after.live_tunnel("tun-8", now_ms),
            Err(TunnelRefusal::DeviceGone)
        );
        let closed = v
            .apply(delta(
                10,
                9,
                vec![Change::TunnelSessionRemoved("tun-8".into())],
            ))
            .expect("delta");
        assert_eq!(
            closed.live_tunnel("tun-8", now_ms),
            Err(TunnelRefusal::Unknown)
        );
    }
}
