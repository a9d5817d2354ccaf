//! Passwords people manage themselves: a change on the account page, and a
//! reset through a link sent by mail.
//!
//! - **Change** ([`Provider::change_password`]): the current password is
//!   a guess like any other, reserved with the lockout before it is
//!   checked (`lockout.rs`), so a stolen session cannot be used to guess
//!   it. The new one must pass the policy (`password_policy.rs`). Unless
//!   the user keeps them, every other SSO session ends and every refresh
//!   token (with its access token) is revoked, in the same transaction.
//! - **Reset request** ([`Provider::request_password_reset`]): counted
//!   against per-address and per-IP limits, then answered at once, the same
//!   way for every address. The lookup, the link and the mail happen
//!   afterwards in a task of their own, so neither the answer nor its
//!   timing tells whether the address has an account: both paths run the
//!   same code up to the answer.
//! - **Reset** ([`Provider::reset_password`]): the link's token is random
//!   (256 bits), stored only as its SHA-256 hash, valid [`RESET_TTL`]
//!   seconds and once: spending it, setting the password, clearing the
//!   lockout and ending every session of the user is one transaction, so
//!   of two uses of one link exactly one succeeds.
//!
//! Every outcome is audited: `account.password.changed`,
//! `account.password.reset_requested` and `account.password.reset`, with
//! the user as actor where there is one.

use std::sync::Arc;

use echo_core::audit::AuditEvent;
use echo_crypto::secret::{random_token, token_hash};
use echo_edge::Origin;
use echo_identity_store::{PasswordReset, User};
use tokio::task::JoinHandle;

use crate::lockout::Reservation;
use crate::mail::Mail;
use crate::user_state::{UserState, state_of};
use crate::{IdentityError, Provider, Result, password_policy};

/// How long a reset link works, in seconds.
pub const RESET_TTL: i64 = 30 * 60;

/// What `/account/password` asks for.
#[derive(Debug)]
pub struct PasswordChange {
    pub current: String,
    pub new: String,
    /// End every other session and revoke every refresh token.
    pub sign_out_elsewhere: bool,
}

impl Provider {
    /// Changes the signed-in `user`'s password; `session_token` is the SSO
    /// session making the change, the one kept when signing out elsewhere.
    /// A wrong current password is [`IdentityError::LoginFailed`].
    pub async fn change_password(
        &self,
        user: &User,
        session_token: &str,
        change: PasswordChange,
        meta: &Origin,
    ) -> Result<()> {
        password_policy::check(&change.new)?;
        let refused = |reason: &'static str| -> Result<()> {
            self.audit(
                AuditEvent::failure("account.password.changed")
                    .actor(user.id.as_str())
                    .detail("reason", reason),
                meta,
            );
            Err(IdentityError::LoginFailed)
        };
        let Reservation::Granted(reserved) = self.reserve_attempt(&user.id).await? else {
            return refused("locked");
        };
        let stored = Some(user.password_hash.clone());
        if !self.passwords.verify(change.current, stored).await {
            self.attempt_failed(&user.id, reserved, meta);
            return refused("wrong_password");
        }
        self.clear_failures(&user.id).await?;
        let hash = self.passwords.hash(change.new).await?;
        let keep = change.sign_out_elsewhere.then(|| token_hash(session_token));
        let now = self.clock.now();
        if !self
            .store
            .change_password(&user.id, &hash, keep.as_deref(), now)
            .await?
        {
            return refused("unknown_user");
        }
        if change.sign_out_elsewhere {
            self.forget_revocation_answers();
        }
        self.audit(
            AuditEvent::success("account.password.changed")
                .actor(user.id.as_str())
                .detail("signed_out_elsewhere", change.sign_out_elsewhere),
            meta,
        );
        Ok(())
    }

    /// `/password/forgot`: counts the request against the limits of the
    /// address and of the client's IP, then returns at once; the task it
    /// returns looks the address up and, for an active user, stores a link
    /// and queues the mail. The caller answers the same words either way
    /// (tests await the task; handlers let it run).
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        meta: &Origin,
    ) -> Result<JoinHandle<()>> {
        let address = email.trim().to_lowercase();
        if !address.contains('@') || address.len() > 320 {
            return Err(IdentityError::BadInput(
                "enter the email address of your account".to_owned(),
            ));
        }
        let now = self.clock.now();
        let ip = meta.ip();
        let ip = ip.as_deref().unwrap_or("unknown");
        let limited = match self.reset_ip_limiter.check(ip, now).await {
            Ok(()) => self.reset_address_limiter.check(&address, now).await,
            refused => refused,
        };
        if let Err(retry_after) = limited {
            self.audit(
                AuditEvent::failure("account.password.reset_requested")
                    .detail("reason", "rate_limited"),
                meta,
            );
            return Err(IdentityError::RateLimited { retry_after });
        }
        let provider = self.clone();
        let meta = meta.clone();
        Ok(tokio::spawn(async move {
            if let Err(e) = provider.send_reset_link(&address, &meta).await {
                tracing::error!(error = %e, "password reset link not sent");
            }
        }))
    }

    async fn send_reset_link(&self, address: &str, meta: &Origin) -> Result<()> {
        let user = self.store.user_by_email(address).await?;
        let active = match &user {
            Some(user) => state_of(user)? == UserState::Active,
            None => false,
        };
        let (Some(user), true) = (user, active) else {
            // Only the length: what was typed may be anyone's address.
            self.audit(
                AuditEvent::failure("account.password.reset_requested")
                    .detail("reason", "no_active_account")
                    .detail("address_chars", address.chars().count()),
                meta,
            );
            return Ok(());
        };
        let token = random_token();
        let now = self.clock.now();
        self.store
            .insert_password_reset(&PasswordReset {
                token_hash: token_hash(&token),
                user_id: user.id.clone(),
                created_at: now,
                expires_at: now + RESET_TTL,
            })
            .await?;
        let link = format!("{}?token={token}", self.config.endpoint("/password/reset"));
        let to = user.email.as_deref().unwrap_or(address);
        let mail = Mail::password_reset(to, &user.username, &link, RESET_TTL / 60)?;
        self.queue_mail(&mail).await?;
        self.audit(
            AuditEvent::success("account.password.reset_requested").actor(user.id.as_str()),
            meta,
        );
        Ok(())
    }

    /// `Ok` while the reset link of `token` is unused and unexpired.
    pub async fn check_reset_link(&self, token: &str) -> Result<()> {
        self.store
            .password_reset_user(&token_hash(token), self.clock.now())
            .await?
            .map(drop)
            .ok_or(IdentityError::LinkInvalid)
    }

    /// Spends the reset link of `token` and sets `new_password`, which
    /// ends every session of the user and clears their lockout.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: String,
        meta: &Origin,
    ) -> Result<()> {
        self.check_reset_link(token).await?;
        password_policy::check(&new_password)?;
        let hash = self.passwords.hash(new_password).await?;
        let spent = self
            .store
            .reset_password(&token_hash(token), &hash, self.clock.now())
            .await?;
        let Some(user_id) = spent else {
            self.audit(
                AuditEvent::failure("account.password.reset").detail("reason", "link_spent"),
                meta,
            );
            return Err(IdentityError::LinkInvalid);
        };
        self.forget_revocation_answers();
        self.audit(
            AuditEvent::success("account.password.reset").actor(user_id),
            meta,
        );
        Ok(())
    }
}
