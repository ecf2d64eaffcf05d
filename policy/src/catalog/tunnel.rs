//! Tunnel sessions in the catalog: a managed device may pass traffic through an edge's tunnel
//! only while one is live. One is opened when the device's user has signed in (SSO and the
//! MFA the policy asks for) and confirmed the device; it is bound to that device, that user and
//! that SSO session, and ends at the session's expiry at the latest.
//!
//! Tunnel sessions are revocable objects like sessions: a revocation of the tunnel session,
//! its SSO session, its user or its device ends it at every edge. One device holds at most
//! one: opening another (a new sign-in) replaces the earlier one. Closing one removes it;
//! expired ones are collected.

use serde::{Deserialize, Serialize};

use super::device::DeviceState;
use super::{
    Catalog, Change, Command, CommandError, Outcome, RevocationTarget, UserKey, not_found,
};

/// A live tunnel session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSessionRecord {
    /// `tun-<revision>`.
    pub id: String,
    /// The device.
    pub device_id: String,
    /// The user who signed in on it.
    pub user: UserKey,
    /// The SSO session that authorised it.
    pub session_id: String,
    /// The edge that opened it.
    pub edge_id: String,
    /// When it was opened (unix ms).
    pub opened_at_ms: i64,
    /// When it ends (unix ms), unless closed or revoked first.
    pub expires_at_ms: i64,
    /// The revision that opened it (a user revocation after it ends it).
    #[serde(default)]
    pub revision: u64,
}

impl Catalog {
    /// The tunnel session commands.
    pub(super) fn apply_tunnel(
        &mut self,
        revision: u64,
        at: i64,
        command: &Command,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, CommandError> {
        match command {
            Command::OpenTunnelSession {
                device_id,
                user,
                user_email,
                session_id,
                edge_id,
                expires_at_ms,
            } => {
                let device = self
                    .devices
                    .get(device_id)
                    .ok_or_else(|| not_found("device", device_id))?;
                if device.state != DeviceState::Enrolled {
                    return Err(CommandError::Invalid(format!(
                        "device {device_id} is not enrolled ({:?})",
                        device.state
                    )));
                }
                if device.owner != user.subject
                    && (user_email.is_empty() || device.owner != *user_email)
                {
                    return Err(CommandError::Invalid(format!(
                        "device {device_id} is not the user's"
                    )));
                }
                if session_id.is_empty() || edge_id.is_empty() {
                    return Err(CommandError::Invalid(
                        "a tunnel session needs the SSO session and the edge".into(),
                    ));
                }
                if *expires_at_ms <= at {
                    return Err(CommandError::Invalid(
                        "a tunnel session must end in the future".into(),
                    ));
                }
                let revoked = self.revocations.values().any(|r| match &r.target {
                    RevocationTarget::Session(s) => s == session_id,
                    RevocationTarget::User { user: u, .. } => u == user,
                    RevocationTarget::Device(d) => d == device_id,
                    _ => false,
                });
                if revoked {
                    return Err(CommandError::Invalid(
                        "the session, the user or the device is revoked".into(),
                    ));
                }
                let replaced: Vec<String> = self
                    .tunnel_sessions
                    .values()
                    .filter(|t| t.device_id == *device_id)
                    .map(|t| t.id.clone())
                    .collect();
                for old in replaced {
                    self.tunnel_sessions.remove(&old);
                    changes.push(Change::TunnelSessionRemoved(old));
                }
                let id = format!("tun-{revision}");
                self.tunnel_sessions.insert(
                    id.clone(),
                    TunnelSessionRecord {
                        id: id.clone(),
                        device_id: device_id.clone(),
                        user: user.clone(),
                        session_id: session_id.clone(),
                        edge_id: edge_id.clone(),
                        opened_at_ms: at,
                        expires_at_ms: *expires_at_ms,
                        revision,
                    },
                );
                changes.push(Change::TunnelSession(id.clone()));
                Ok(Outcome::TunnelSession(id))
            }
            Command::CloseTunnelSession { id, .. } => {
                if self.tunnel_sessions.remove(id).is_none() {
                    return Err(not_found("tunnel session", id));
                }
                changes.push(Change::TunnelSessionRemoved(id.clone()));
                Ok(Outcome::TunnelSession(id.clone()))
            }
            _ => Err(CommandError::Invalid("not a tunnel session command".into())),
        }
    }

    /// Removes the tunnel sessions that ended by `at`; how many.
    pub(super) fn collect_tunnel_sessions(&mut self, at: i64, changes: &mut Vec<Change>) -> usize {
        let ended: Vec<String> = self
            .tunnel_sessions
            .values()
            .filter(|t| t.expires_at_ms <= at)
            .map(|t| t.id.clone())
            .collect();
        for id in &ended {
            self.tunnel_sessions.remove(id);
            changes.push(Change::TunnelSessionRemoved(id.clone()));
        }
        ended.len()
    }
}
