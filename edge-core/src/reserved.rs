//! Palisade's own paths on every application host, parsed once into an enum: adapters match on
//! the variant, never on strings.

/// The prefix of Palisade's reserved paths on every application host.
pub const PREFIX: &str = "/.palisade/";
/// Where every edge publishes the identity assertion's public key.
pub const JWKS_PATH: &str = "/.well-known/palisade/jwks.json";
/// Where the self-service portal lives.
pub const PORTAL: &str = "/.palisade/portal";
/// Where the MFA prompt lives.
pub const MFA_PROMPT: &str = "/.palisade/mfa";

/// A step of a WebAuthn ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The edge hands out the options and the challenge.
    Begin,
    /// The browser answers.
    Finish,
}

/// A form action of the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalAction {
    /// Begin adding an authenticator app.
    TotpBegin,
    /// Confirm it with its first code.
    TotpConfirm,
    /// Rename a factor.
    Rename,
    /// Remove a factor.
    Remove,
    /// Revoke one of the user's sessions or devices.
    Revoke,
}

/// One of Palisade's reserved paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedPath {
    /// The identity assertion's public key set.
    Jwks,
    /// The identity provider's redirect back.
    Callback,
    /// Sign-in with a chosen provider.
    Login,
    /// Sign-out.
    Logout,
    /// The browser half of the WebAuthn ceremonies.
    WebauthnJs,
    /// The MFA prompt.
    MfaPrompt,
    /// Passing a TOTP code.
    MfaTotp,
    /// Passing a WebAuthn factor.
    MfaWebauthn(Step),
    /// The portal page.
    Portal,
    /// Registering a WebAuthn factor from the portal.
    PortalWebauthn(Step),
    /// A portal form.
    PortalAction(PortalAction),
    /// Under the reserved prefix, but no such page.
    Unknown,
}

impl ReservedPath {
    /// The reserved path `path` (normalised) names, or `None` when it belongs to applications.
    pub fn parse(path: &str) -> Option<ReservedPath> {
        use ReservedPath as R;
        if path == JWKS_PATH {
            return Some(R::Jwks);
        }
        let rest = path.strip_prefix(PREFIX)?;
        Some(match rest {
            "callback" => R::Callback,
            "login" => R::Login,
            "logout" => R::Logout,
            "webauthn.js" => R::WebauthnJs,
            "mfa" => R::MfaPrompt,
            "mfa/totp" => R::MfaTotp,
            "mfa/webauthn/begin" => R::MfaWebauthn(Step::Begin),
            "mfa/webauthn/finish" => R::MfaWebauthn(Step::Finish),
            "portal" => R::Portal,
            "portal/webauthn/begin" => R::PortalWebauthn(Step::Begin),
            "portal/webauthn/finish" => R::PortalWebauthn(Step::Finish),
            "portal/totp/begin" => R::PortalAction(PortalAction::TotpBegin),
            "portal/totp/confirm" => R::PortalAction(PortalAction::TotpConfirm),
            "portal/factor/rename" => R::PortalAction(PortalAction::Rename),
            "portal/factor/remove" => R::PortalAction(PortalAction::Remove),
            "portal/revoke" => R::PortalAction(PortalAction::Revoke),
            _ => R::Unknown,
        })
    }

    /// The path itself (the prefix for `Unknown`).
    pub fn path(self) -> &'static str {
        use ReservedPath as R;
        match self {
            R::Jwks => JWKS_PATH,
            R::Callback => "/.palisade/callback",
            R::Login => "/.palisade/login",
            R::Logout => "/.palisade/logout",
            R::WebauthnJs => "/.palisade/webauthn.js",
            R::MfaPrompt => MFA_PROMPT,
            R::MfaTotp => "/.palisade/mfa/totp",
            R::MfaWebauthn(Step::Begin) => "/.palisade/mfa/webauthn/begin",
            R::MfaWebauthn(Step::Finish) => "/.palisade/mfa/webauthn/finish",
            R::Portal => PORTAL,
            R::PortalWebauthn(Step::Begin) => "/.palisade/portal/webauthn/begin",
            R::PortalWebauthn(Step::Finish) => "/.palisade/portal/webauthn/finish",
            R::PortalAction(PortalAction::TotpBegin) => "/.palisade/portal/totp/begin",
            R::PortalAction(PortalAction::TotpConfirm) => "/.palisade/portal/totp/confirm",
            R::PortalAction(PortalAction::Rename) => "/.palisade/portal/factor/rename",
            R::PortalAction(PortalAction::Remove) => "/.palisade/portal/factor/remove",
            R::PortalAction(PortalAction::Revoke) => "/.palisade/portal/revoke",
            R::Unknown => PREFIX,
        }
    }

    /// Whether the path changes state: it answers only `POST`, from this origin, with the
    /// session's anti-CSRF token.
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            ReservedPath::MfaTotp
                | ReservedPath::MfaWebauthn(_)
                | ReservedPath::PortalWebauthn(_)
                | ReservedPath::PortalAction(_)
        )
    }

    /// Whether the path belongs to the MFA prompt or the portal (a signed-in session is needed;
    /// requests are limited per user).
    pub fn is_mfa_or_portal(self) -> bool {
        matches!(
            self,
            ReservedPath::MfaPrompt
                | ReservedPath::MfaTotp
                | ReservedPath::MfaWebauthn(_)
                | ReservedPath::Portal
                | ReservedPath::PortalWebauthn(_)
                | ReservedPath::PortalAction(_)
        )
    }

    /// Whether the path belongs to the portal (limited by the portal's per-user rate).
    pub fn is_portal(self) -> bool {
        matches!(
            self,
            ReservedPath::Portal | ReservedPath::PortalWebauthn(_) | ReservedPath::PortalAction(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_path_parses_to_its_variant() {
        use ReservedPath as R;
        let table = [
            ("/.well-known/palisade/jwks.json", Some(R::Jwks)),
            ("/.palisade/callback", Some(R::Callback)),
            ("/.palisade/login", Some(R::Login)),
            ("/.palisade/logout", Some(R::Logout)),
            ("/.palisade/webauthn.js", Some(R::WebauthnJs)),
            ("/.palisade/mfa", Some(R::MfaPrompt)),
            ("/.palisade/mfa/totp", Some(R::MfaTotp)),
            (
                "/.palisade/mfa/webauthn/begin",
                Some(R::MfaWebauthn(Step::Begin)),
            ),
            (
                "/.palisade/mfa/webauthn/finish",
                Some(R::MfaWebauthn(Step::Finish)),
            ),
            ("/.palisade/portal", Some(R::Portal)),
            (
                "/.palisade/portal/webauthn/begin",
                Some(R::PortalWebauthn(Step::Begin)),
            ),
            (
                "/.palisade/portal/webauthn/finish",
                Some(R::PortalWebauthn(Step::Finish)),
            ),
            (
                "/.palisade/portal/totp/begin",
                Some(R::PortalAction(PortalAction::TotpBegin)),
            ),
            (
                "/.palisade/portal/totp/confirm",
                Some(R::PortalAction(PortalAction::TotpConfirm)),
            ),
            (
                "/.palisade/portal/factor/rename",
                Some(R::PortalAction(PortalAction::Rename)),
            ),
            (
                "/.palisade/portal/factor/remove",
                Some(R::PortalAction(PortalAction::Remove)),
            ),
            (
                "/.palisade/portal/revoke",
                Some(R::PortalAction(PortalAction::Revoke)),
            ),
            ("/.palisade/", Some(R::Unknown)),
            ("/.palisade/mfa/", Some(R::Unknown)),
            ("/.palisade/portal/nope", Some(R::Unknown)),
            ("/.palisade", None),
            ("/", None),
            ("/app/.palisade/mfa", None),
            ("/.well-known/palisade/jwks.json/x", None),
        ];
        for (path, want) in table {
            assert_eq!(ReservedPath::parse(path), want, "{path}");
            if let Some(r) = want.filter(|r| *r != R::Unknown) {
                assert_eq!(r.path(), path, "{r:?} names its own path");
            }
        }
    }

    #[test]
    fn state_changing_paths_are_the_posts() {
        for p in [
            "/.palisade/mfa/totp",
            "/.palisade/portal/revoke",
            "/.palisade/mfa/webauthn/begin",
        ] {
            assert!(
                ReservedPath::parse(p).is_some_and(ReservedPath::changes_state),
                "{p}"
            );
        }
        for p in [
            "/.palisade/mfa",
            "/.palisade/portal",
            "/.palisade/logout",
            "/.palisade/login",
        ] {
            assert!(
                !ReservedPath::parse(p).is_some_and(ReservedPath::changes_state),
                "{p}"
            );
        }
    }
}
