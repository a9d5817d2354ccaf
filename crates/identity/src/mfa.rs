//! The second factor: TOTP (RFC 6238) with one-time recovery codes.
//!
//! - Codes: HMAC-SHA-1, 6 digits, 30 s steps, the step before and after
//!   accepted for clock drift (RFC 6238 §5.2), what every authenticator app
//!   does by default. A step, once accepted, is never accepted again (the
//!   store keeps the last one), so a code seen over a shoulder is useless.
//! - The 160-bit secret (RFC 4226 §4 R6) is stored sealed with AES-256-GCM
//!   under a key derived from the master key, bound to the user's id.
//! - Enrolment stores the secret unconfirmed; it takes effect only when the
//!   user proves their authenticator works by typing its current code. That
//!   confirmation creates 10 recovery codes (50 random bits each), shown
//!   once and stored as SHA-256 hashes; each works once.
//! - Every check of a code is a guess at the account and goes through the
//!   lockout (`lockout.rs`) like a password.
//! - On the account page ([`Provider::change_mfa`]) a signed-in user
//!   regenerates their recovery codes, replaces their authenticator or
//!   removes TOTP, each proven by a current code or a recovery code (checked
//!   as at login: the lockout, each step and code once). A user whose role
//!   requires a second factor cannot remove it. Replacing removes the
//!   credential and starts a new enrolment at once: until it is confirmed
//!   the account has no second factor, and a role that requires one makes
//!   the next login enrol.

use aws_lc_rs::hmac;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::secret::{constant_time_eq, random_bytes, token_hash};
use echo_identity_store::{Store, TotpCredential, User};

use crate::lockout::Reservation;
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// RFC 6238 §4.1 X: seconds per time step.
pub const STEP_SECONDS: i64 = 30;
/// RFC 4226 §5.3: digits of a code.
const DIGITS: usize = 6;
/// Steps accepted either side of the current one (RFC 6238 §5.2).
const DRIFT_STEPS: i64 = 1;
const RECOVERY_CODES: usize = 10;
/// Name shown in authenticator apps (the `issuer` of the otpauth URI).
const ISSUER_LABEL: &str = "Echo";

/// RFC 4226 §5.3: HOTP before the decimal reduction: the 31-bit dynamic
/// truncation of HMAC-SHA-1(secret, counter).
fn hotp_value(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff
}

/// RFC 6238 §4.2: the code of time step `step`.
fn totp_code(secret: &[u8], step: i64) -> String {
    let value = hotp_value(secret, u64::try_from(step).unwrap_or(0)) % 10u32.pow(DIGITS as u32);
    format!("{value:0DIGITS$}")
}

/// The time step `code` belongs to, within the drift window around `now`.
/// Every candidate is compared, in constant time, whatever matches.
fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let current = now.div_euclid(STEP_SECONDS);
    let mut found = None;
    for step in current - DRIFT_STEPS..=current + DRIFT_STEPS {
        if constant_time_eq(totp_code(secret, step).as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 §6 base32 without padding: how authenticator apps take secrets.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A recovery code as typed: lower case, without separators.
fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// 50 random bits as `xxxxx-xxxxx`.
fn new_recovery_code() -> String {
    let text = base32(&random_bytes::<7>()).to_ascii_lowercase();
    format!("{}-{}", &text[..5], &text[5..10])
}

/// A new set of recovery codes, as shown once and as stored (hashes).
fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes = codes
        .iter()
        .map(|c| token_hash(&normalise_recovery_code(c)))
        .collect();
    (codes, hashes)
}

/// What the account page's second-factor form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaChange {
    RecoveryCodes,
    Replace,
    Remove,
}

impl std::str::FromStr for MfaChange {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "recovery_codes" => Ok(MfaChange::RecoveryCodes),
            "replace" => Ok(MfaChange::Replace),
            "remove" => Ok(MfaChange::Remove),
            _ => Err(IdentityError::BadInput("unknown action".to_owned())),
        }
    }
}

/// What a change of the second factor gives the user to see.
#[derive(Debug)]
pub enum MfaChanged {
    /// New recovery codes, shown once.
    RecoveryCodes(Vec<String>),
    /// The enrolment of the new authenticator.
    Replace(Enrolment),
    Removed,
}

/// The enrolment page's view of `secret`: base32, the otpauth URI, and
/// the URI as a QR code.
fn enrolment(user: &User, secret: &[u8]) -> Result<Enrolment> {
    let secret = base32(secret);
    let label: String = url::form_urlencoded::byte_serialize(
        format!("{ISSUER_LABEL}:{}", user.username).as_bytes(),
    )
    .collect();
    // Key Uri Format (Google Authenticator wiki): the defaults spelled out.
    let uri = format!(
        "otpauth://totp/{label}?secret={secret}&issuer={ISSUER_LABEL}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    );
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| IdentityError::BadInput(format!("cannot draw the QR code: {e}")))?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    // Inline in HTML: drop the XML declaration before `<svg`.
    let qr_svg = svg
        .find("<svg")
        .map_or(svg.as_str(), |at| &svg[at..])
        .to_owned();
    Ok(Enrolment {
        secret,
        uri,
        qr_svg,
    })
}

/// What an enrolment page shows: the secret three ways.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// Base32, for typing into an app by hand.
    pub secret: String,
    /// The `otpauth://totp/…` URI the QR code holds.
    pub uri: String,
    /// The QR code as an inline `<svg>` element.
    pub qr_svg: String,
}

/// A user's second factor, as `echod user show` and the account page see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaState {
    None,
    /// Enrolment started, not confirmed.
    Pending,
    Totp {
        recovery_codes_left: i64,
    },
}

impl std::fmt::Display for MfaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MfaState::None => f.write_str("none"),
            MfaState::Pending => f.write_str("none (TOTP enrolment not confirmed)"),
            MfaState::Totp {
                recovery_codes_left,
            } => write!(f, "TOTP, {recovery_codes_left} recovery codes left"),
        }
    }
}

/// The second factor of user `user_id`.
pub async fn mfa_state(store: &dyn Store, user_id: &str) -> Result<MfaState> {
    Ok(match store.totp_credential(user_id).await? {
        None => MfaState::None,
        Some(c) if c.confirmed_at.is_none() => MfaState::Pending,
        Some(_) => MfaState::Totp {
            recovery_codes_left: store.recovery_codes_left(user_id).await?,
        },
    })
}

/// `echod user reset-mfa NAME`: removes the user's TOTP credential and
/// recovery codes (a lost phone); they enrol again at their next login
/// if their role requires it, or from the account page.
pub async fn reset_mfa(store: &dyn Store, audit: &dyn AuditSink, username: &str) -> Result<bool> {
    let user = crate::user_state::find_user(store, username).await?;
    let removed = store.delete_mfa(&user.id).await?;
    audit.record(
        AuditEvent::success("admin.user.mfa_reset")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", username),
    );
    Ok(removed)
}

/// What the account page shows of the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaSummary {
    pub state: MfaState,
    /// A role of the user requires a second factor: it cannot be removed.
    pub required: bool,
}

impl Provider {
    /// The account page's view of `user`'s second factor.
    pub async fn mfa_summary(&self, user: &User) -> Result<MfaSummary> {
        Ok(MfaSummary {
            state: mfa_state(&*self.store, &user.id).await?,
            required: self.mfa_required_by_role(user),
        })
    }

    /// The enrolment `user` started, if one is pending, else a new one:
    /// showing the page again (a reload, a second tab, a new login) must
    /// not replace a secret the user may have scanned already.
    pub async fn enrolment_for(&self, user: &User) -> Result<Enrolment> {
        match self.pending_enrolment(user).await? {
            Some(pending) => Ok(pending),
            None => self.begin_totp_enrolment(user).await,
        }
    }

    /// Whether `user` has a role of `mfa_required_roles`, which needs a
    /// second factor (everyone enrolled needs one too).
    pub(crate) fn mfa_required_by_role(&self, user: &User) -> bool {
        user.roles
            .iter()
            .any(|role| self.config.mfa_required_roles.contains(role))
    }

    fn open_secret(&self, credential: &TotpCredential) -> Result<Vec<u8>> {
        Ok(self
            .totp_key
            .open(credential.user_id.as_bytes(), &credential.sealed_secret)?)
    }

    /// Starts (or restarts) TOTP enrolment with a new secret, stored
    /// unconfirmed. Refused when the user already has a confirmed one.
    pub async fn begin_totp_enrolment(&self, user: &User) -> Result<Enrolment> {
        let secret = random_bytes::<20>();
        let stored = self
            .store
            .put_unconfirmed_totp(&TotpCredential {
                user_id: user.id.clone(),
                sealed_secret: self.totp_key.seal(user.id.as_bytes(), &secret)?,
                created_at: self.clock.now(),
                confirmed_at: None,
                last_step: 0,
            })
            .await?;
        if !stored {
            return Err(IdentityError::BadInput(
                "two-step verification is already set up".into(),
            ));
        }
        enrolment(user, &secret)
    }

    /// The enrolment `user` started and has not confirmed, if any.
    pub async fn pending_enrolment(&self, user: &User) -> Result<Option<Enrolment>> {
        match self.store.totp_credential(&user.id).await? {
            Some(credential) if credential.confirmed_at.is_none() => {
                Ok(Some(enrolment(user, &self.open_secret(&credential)?)?))
            }
            _ => Ok(None),
        }
    }

    /// Confirms the pending enrolment with the authenticator's current code
    /// and returns the recovery codes, to be shown once.
    pub async fn confirm_totp_enrolment(
        &self,
        user: &User,
        code: &str,
        meta: &Origin,
    ) -> Result<Vec<String>> {
        let credential = self
            .store
            .totp_credential(&user.id)
            .await?
            .filter(|c| c.confirmed_at.is_none())
            .ok_or(IdentityError::MfaFailed)?;
        let secret = self.open_secret(&credential)?;
        let now = self.clock.now();
        let step = matching_step(&secret, code.trim(), now).ok_or(IdentityError::MfaFailed)?;
        let (codes, hashes) = new_recovery_codes();
        if !self
            .store
            .confirm_totp(&user.id, &credential.sealed_secret, step, now, &hashes)
            .await?
        {
            return Err(IdentityError::MfaFailed);
        }
        self.audit(
            AuditEvent::success("auth.mfa.enrolled")
                .actor(user.id.as_str())
                .detail("method", "totp"),
            meta,
        );
        Ok(codes)
    }

    /// Whether `user` has a confirmed TOTP credential.
    pub(crate) async fn has_totp(&self, user: &User) -> Result<bool> {
        Ok(self
            .store
            .totp_credential(&user.id)
            .await?
            .is_some_and(|c| c.confirmed_at.is_some()))
    }

    /// The second login step: a TOTP code (6 digits) or a recovery code,
    /// counted as a guess by the lockout. Every refusal is the same
    /// [`IdentityError::MfaFailed`].
    pub(crate) async fn verify_second_factor(
        &self,
        user: &User,
        code: &str,
        meta: &Origin,
    ) -> Result<()> {
        let reserved = match self.reserve_attempt(&user.id).await? {
            Reservation::Granted(reserved) => reserved,
            Reservation::Refused => {
                crate::metrics::mfa("none", "locked");
                self.audit_mfa_failure(user, "locked", meta);
                return Err(IdentityError::MfaFailed);
            }
        };
        let code = code.trim();
        let now = self.clock.now();
        let (method, accepted) = if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
        {
            let credential = self
                .store
                .totp_credential(&user.id)
                .await?
                .filter(|c| c.confirmed_at.is_some())
                .ok_or(IdentityError::MfaFailed)?;
            let secret = self.open_secret(&credential)?;
            let accepted = match matching_step(&secret, code, now) {
                // RFC 6238 §5.2: a step is accepted once.
                Some(step) => self.store.use_totp_step(&user.id, step).await?,
                None => false,
            };
            ("totp", accepted)
        } else {
            let hash = token_hash(&normalise_recovery_code(code));
            let accepted = self.store.use_recovery_code(&user.id, &hash, now).await?;
            ("recovery_code", accepted)
        };
        if !accepted {
            self.attempt_failed(&user.id, reserved, meta);
            crate::metrics::mfa(method, "failure");
            self.audit_mfa_failure(user, method, meta);
            return Err(IdentityError::MfaFailed);
        }
        crate::metrics::mfa(method, "success");
        self.audit(
            AuditEvent::success("auth.mfa.success")
                .actor(user.id.as_str())
                .detail("method", method),
            meta,
        );
        Ok(())
    }

    /// Changes the signed-in `user`'s second factor, proven by `code` (a
    /// current TOTP code or a recovery code). Removal is refused
    /// ([`IdentityError::NotAllowed`]) when the user's role requires a
    /// second factor; a wrong code is [`IdentityError::MfaFailed`].
    pub async fn change_mfa(
        &self,
        user: &User,
        code: &str,
        change: MfaChange,
        meta: &Origin,
    ) -> Result<MfaChanged> {
        if change == MfaChange::Remove && self.mfa_required_by_role(user) {
            self.audit(
                AuditEvent::failure("auth.mfa.removed")
                    .actor(user.id.as_str())
                    .detail("reason", "required_by_role"),
                meta,
            );
            return Err(IdentityError::NotAllowed(
                "Your role requires two-step verification: it cannot be turned off.".to_owned(),
            ));
        }
        if !self.has_totp(user).await? {
            return Err(IdentityError::BadInput(
                "two-step verification is not on".to_owned(),
            ));
        }
        self.verify_second_factor(user, code, meta).await?;
        let (action, changed) = match change {
            MfaChange::RecoveryCodes => {
                let (codes, hashes) = new_recovery_codes();
                if !self.store.replace_recovery_codes(&user.id, &hashes).await? {
                    return Err(IdentityError::MfaFailed);
                }
                (
                    "auth.mfa.recovery_codes_replaced",
                    MfaChanged::RecoveryCodes(codes),
                )
            }
            MfaChange::Replace => {
                self.store.delete_mfa(&user.id).await?;
                let enrolment = self.begin_totp_enrolment(user).await?;
                ("auth.mfa.replace_started", MfaChanged::Replace(enrolment))
            }
            MfaChange::Remove => {
                self.store.delete_mfa(&user.id).await?;
                ("auth.mfa.removed", MfaChanged::Removed)
            }
        };
        self.audit(AuditEvent::success(action).actor(user.id.as_str()), meta);
        Ok(changed)
    }

    fn audit_mfa_failure(&self, user: &User, reason: &str, meta: &Origin) {
        self.audit(
            AuditEvent::failure("auth.mfa.failure")
                .actor(user.id.as_str())
                .detail("reason", reason),
            meta,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 column (8 digits), secret "12345678901234567890".
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            let step = u64::try_from(time / STEP_SECONDS).unwrap();
            assert_eq!(hotp_value(secret, step) % 100_000_000, expected, "T={time}");
        }
        assert_eq!(totp_code(secret, 59 / STEP_SECONDS), "287082");
        assert_eq!(totp_code(secret, 1_111_111_109 / STEP_SECONDS), "081804");
    }

    #[test]
    fn one_step_of_drift_either_way() {
        let secret = b"12345678901234567890";
        let now = 1_234_567_890;
        let step = now / STEP_SECONDS;
        for s in [step - 1, step, step + 1] {
            assert_eq!(matching_step(secret, &totp_code(secret, s), now), Some(s));
        }
        for s in [step - 2, step + 2] {
            assert_eq!(matching_step(secret, &totp_code(secret, s), now), None);
        }
        assert_eq!(matching_step(secret, "12345", now), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        // RFC 4648 §10, without padding.
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected);
        }
    }

    #[test]
    fn recovery_codes_are_typed_loosely() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(
            normalise_recovery_code(&format!(" {} ", code.to_uppercase())),
            normalise_recovery_code(&code)
        );
    }
}
