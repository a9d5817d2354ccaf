//! Addresses and new accounts: verifying an address by a link sent to it,
//! signing up, and invitations.
//!
//! - **Links** ([`LinkPurpose`]): a random 256-bit token, stored only as
//!   its SHA-256 hash with the address it was sent to (`email_links`),
//!   valid [`VERIFY_TTL`] and once. Following one is a form (POST, CSRF)
//!   rather than the GET itself, so a mail scanner that opens every link
//!   spends nothing.
//! - **Verification** ([`Provider::change_email`],
//!   [`Provider::resend_verification`], [`Provider::verify_email`]): a new
//!   or changed address is unverified until its link is followed; a link
//!   proves only the address it was sent to, so one that arrives after
//!   another change does nothing. `email_verified` in ID tokens and
//!   userinfo is the stored flag.
//!
//! - **Sign-up** ([`Provider::register`], policy `open` only): the form is
//!   checked (username, address and its domain, password policy) and
//!   counted against per-IP and per-address limits, then answered at once
//!   with the same words whatever exists; the lookup, the account (state
//!   `invited`, unverified) and the mail happen afterwards in a task of
//!   their own, as for a reset link. A taken username or address gets a
//!   mail saying so to the address typed, never an answer in the page.
//!   The account becomes `active` when its verification link is followed.
//! - **Invitations** ([`Provider::send_invitation`], policies `invite` and
//!   `open`): a user an administrator invited gets a link, valid
//!   [`INVITATION_TTL`], to choose a password; accepting it sets the
//!   password, verifies the address and activates the account, at once.
//!
//! Every outcome is audited: `account.email.changed`,
//! `account.email.verification_sent`, `account.email.verified`,
//! `account.registered`, `account.invitation.sent` and
//! `account.invitation.accepted`.

use std::sync::Arc;

use echo_core::audit::AuditEvent;
use echo_crypto::secret::{random_token, token_hash};
use echo_edge::Origin;
use echo_identity_store::{EmailLink, LinkEffect, StoreError, User};
use tokio::task::JoinHandle;

use crate::mail::{LinkWords, Mail};
use crate::user_state::UserState;
use crate::{IdentityError, Provider, RegistrationPolicy, Result, admin, password_policy};

/// How long a verification link works, in seconds.
pub const VERIFY_TTL: i64 = 24 * 60 * 60;
/// How long an invitation works, in seconds.
pub const INVITATION_TTL: i64 = 7 * 24 * 60 * 60;

/// Longest address accepted (RFC 5321 §4.5.3.1: 64 + 1 + 255).
pub const MAX_EMAIL_LEN: usize = 320;

/// What following a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Verifies the address; activates a sign-up waiting for it.
    VerifyEmail,
    /// Sets a password, verifies the address and activates.
    Invitation,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::VerifyEmail => "verify_email",
            LinkPurpose::Invitation => "invitation",
        }
    }

    fn ttl(self) -> i64 {
        match self {
            LinkPurpose::VerifyEmail => VERIFY_TTL,
            LinkPurpose::Invitation => INVITATION_TTL,
        }
    }

    /// The page the link opens.
    fn path(self) -> &'static str {
        match self {
            LinkPurpose::VerifyEmail => "/email/verify",
            LinkPurpose::Invitation => "/invitation",
        }
    }
}

/// `address` trimmed and checked for the shape of an address: one `@`
/// with something either side, no spaces or controls, bounded.
pub fn normalised_email(address: &str) -> Result<String> {
    let address = address.trim();
    let well_formed = address.len() <= MAX_EMAIL_LEN
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c));
    if well_formed {
        Ok(address.to_owned())
    } else {
        Err(IdentityError::BadInput(
            "enter a valid email address".to_owned(),
        ))
    }
}

/// What `/register` asks for.
#[derive(Debug)]
pub struct SignUp {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// The words of the mail that asks a new user to verify their address.
const WELCOME: LinkWords<'static> = LinkWords {
    subject: "Activate your Echo account",
    message: "Welcome to Echo. To activate your account, confirm that this address is yours \
              by opening this link within 24 hours:",
    action: "Activate my account",
    footer: "The link works once. If you did not sign up, ignore this message: no account \
             is opened without it.",
};

impl Provider {
    /// Stores a link for `purpose` to `user`'s current address and queues
    /// the mail that carries it, in `words`. Nothing without an address.
    pub(crate) async fn send_link(
        &self,
        user: &User,
        purpose: LinkPurpose,
        words: &LinkWords<'_>,
    ) -> Result<bool> {
        let Some(email) = user.email.as_deref() else {
            return Ok(false);
        };
        let token = random_token();
        let now = self.clock.now();
        self.store
            .insert_email_link(&EmailLink {
                token_hash: token_hash(&token),
                purpose: purpose.as_str().to_owned(),
                user_id: user.id.clone(),
                email: email.to_owned(),
                created_at: now,
                expires_at: now + purpose.ttl(),
            })
            .await?;
        let link = format!("{}?token={token}", self.config.endpoint(purpose.path()));
        self.queue_mail(&Mail::with_link(email, &user.username, &link, words)?)
            .await?;
        Ok(true)
    }

    /// Sends `user` a link verifying their current address (when mail is
    /// set up and they have one).
    async fn send_verification(&self, user: &User, meta: &Origin) -> Result<()> {
        if !self.mail_enabled() {
            return Ok(());
        }
        let words = LinkWords {
            subject: "Verify your email address",
            message: "To confirm that this address is yours, open this link within 24 hours:",
            action: "Verify my address",
            footer: "The link works once. If you did not ask for this, ignore this message.",
        };
        if self
            .send_link(user, LinkPurpose::VerifyEmail, &words)
            .await?
        {
            self.audit(
                AuditEvent::success("account.email.verification_sent").actor(user.id.as_str()),
                meta,
            );
        }
        Ok(())
    }

    /// `/account/email`: sets the signed-in `user`'s address, unverified,
    /// and sends a link to it.
    pub async fn change_email(&self, user: &User, address: &str, meta: &Origin) -> Result<()> {
        let address = normalised_email(address)?;
        if !self.store.change_email(&user.id, &address).await? {
            return Err(IdentityError::LoginFailed);
        }
        self.audit(
            AuditEvent::success("account.email.changed")
                .actor(user.id.as_str())
                .detail("had_address", user.email.is_some()),
            meta,
        );
        let user = User {
            email: Some(address),
            email_verified: false,
            ..user.clone()
        };
        self.send_verification(&user, meta).await
    }

    /// Sends the signed-in `user` a new link for their unverified address,
    /// counted against the per-address limit of reset links.
    pub async fn resend_verification(&self, user: &User, meta: &Origin) -> Result<()> {
        let Some(address) = user.email.as_deref().filter(|_| !user.email_verified) else {
            return Err(IdentityError::BadInput(
                "there is no unverified address to verify".to_owned(),
            ));
        };
        let key = format!("verify:{}", address.to_lowercase());
        if let Err(retry_after) = self
            .reset_address_limiter
            .check(&key, self.clock.now())
            .await
        {
            return Err(IdentityError::RateLimited { retry_after });
        }
        self.send_verification(user, meta).await
    }

    /// `/register`: checks the form and the limits, then returns at once;
    /// the task it returns opens the account and sends the mail. The caller
    /// answers the same words whatever the task finds (tests await it).
    pub async fn register(
        self: &Arc<Self>,
        sign_up: SignUp,
        meta: &Origin,
    ) -> Result<JoinHandle<()>> {
        self.check_sign_up_open()?;
        admin::check_profile(&sign_up.username, None, &[])?;
        let email = normalised_email(&sign_up.email)?;
        let domain = email.rsplit('@').next().unwrap_or_default().to_lowercase();
        let domains = &self.config.registration_domains;
        if !domains.is_empty() && !domains.contains(&domain) {
            return Err(IdentityError::BadInput(
                "addresses of this domain cannot sign up here".to_owned(),
            ));
        }
        password_policy::check(&sign_up.password)?;
        let now = self.clock.now();
        let ip = meta.ip().unwrap_or_else(|| "unknown".to_owned());
        let limited = match self
            .reset_ip_limiter
            .check(&format!("register:{ip}"), now)
            .await
        {
            Ok(()) => {
                let address = format!("register:{}", email.to_lowercase());
                self.reset_address_limiter.check(&address, now).await
            }
            refused => refused,
        };
        if let Err(retry_after) = limited {
            self.audit(
                AuditEvent::failure("account.registered").detail("reason", "rate_limited"),
                meta,
            );
            return Err(IdentityError::RateLimited { retry_after });
        }
        let provider = self.clone();
        let meta = meta.clone();
        Ok(tokio::spawn(async move {
            if let Err(e) = provider.open_account(sign_up, email, &meta).await {
                tracing::error!(error = %e, "sign-up not completed");
            }
        }))
    }

    /// Refuses a sign-up unless the policy is `open` and mail works.
    pub fn check_sign_up_open(&self) -> Result<()> {
        match self.config.registration {
            RegistrationPolicy::Open if self.mail_enabled() => Ok(()),
            RegistrationPolicy::Open => Err(IdentityError::NotAllowed(
                "Sign-up needs email, which is not set up here.".to_owned(),
            )),
            RegistrationPolicy::Invite => Err(IdentityError::NotAllowed(
                "Accounts here are by invitation: ask an administrator.".to_owned(),
            )),
            RegistrationPolicy::Closed => Err(IdentityError::NotAllowed(
                "Sign-up is closed here: ask an administrator for an account.".to_owned(),
            )),
        }
    }

    async fn open_account(&self, sign_up: SignUp, email: String, meta: &Origin) -> Result<()> {
        let refused = |reason: &str| {
            self.audit(
                AuditEvent::failure("account.registered").detail("reason", reason),
                meta,
            );
        };
        let hash = self.passwords.hash(sign_up.password).await?;
        if let Some(holder) = self.store.user_by_email(&email).await? {
            refused("address_taken");
            let words = LinkWords {
                subject: "You already have an Echo account",
                message: &format!(
                    "Someone tried to sign up with this address, which already has the account \
                     {:?}. If that was you and you forgot its password, choose a new one here:",
                    holder.username
                ),
                action: "Choose a new password",
                footer: "If it was not you, ignore this message: nothing changed.",
            };
            let link = self.config.endpoint("/password/forgot");
            let mail = Mail::with_link(&email, &sign_up.username, &link, &words)?;
            return self.queue_mail(&mail).await;
        }
        let user = User {
            state: UserState::Invited.as_str().to_owned(),
            ..admin::user_record(
                &*self.clock,
                sign_up.username.clone(),
                Some(email.clone()),
                Vec::new(),
                hash,
            )
        };
        match self.store.insert_user(&user).await {
            Err(StoreError::Conflict(_)) => {
                refused("username_taken");
                let words = LinkWords {
                    subject: "Choose another username",
                    message: &format!(
                        "Someone tried to sign up with this address as {:?}, a username that is \
                         taken. To sign up, choose another one:",
                        sign_up.username
                    ),
                    action: "Sign up",
                    footer: "If it was not you, ignore this message: no account was opened.",
                };
                let link = self.config.endpoint("/register");
                let mail = Mail::with_link(&email, &sign_up.username, &link, &words)?;
                return self.queue_mail(&mail).await;
            }
            inserted => inserted?,
        }
        self.audit(
            AuditEvent::success("account.registered")
                .actor(user.id.as_str())
                .detail("username", user.username.as_str()),
            meta,
        );
        self.send_link(&user, LinkPurpose::VerifyEmail, &WELCOME)
            .await
            .map(drop)
    }

    /// Mails an invited `user` a link to choose their password, when the
    /// policy invites by mail and mail is set up; whether it went.
    pub async fn send_invitation(&self, user: &User, actor: &str, meta: &Origin) -> Result<bool> {
        if !self.config.registration.invites_by_mail() || !self.mail_enabled() {
            return Ok(false);
        }
        if crate::user_state::state_of(user)? != UserState::Invited {
            return Err(IdentityError::BadInput(format!(
                "user {} is not invited (state {})",
                user.username, user.state
            )));
        }
        let message = format!(
            "You are invited to Echo as {:?}. To choose your password and activate your \
             account, open this link within 7 days:",
            user.username
        );
        let words = LinkWords {
            subject: "Your invitation to Echo",
            message: &message,
            action: "Accept the invitation",
            footer: "The link works once. If you did not expect it, ignore this message.",
        };
        let sent = self
            .send_link(user, LinkPurpose::Invitation, &words)
            .await?;
        if sent {
            self.audit(
                AuditEvent::success("account.invitation.sent")
                    .actor(actor)
                    .detail("user_id", user.id.as_str()),
                meta,
            );
        }
        Ok(sent)
    }

    /// The username an invitation of `token` is for, while it is live.
    pub async fn invitation_username(&self, token: &str) -> Result<String> {
        let link = self
            .store
            .email_link(
                &token_hash(token),
                LinkPurpose::Invitation.as_str(),
                self.clock.now(),
            )
            .await?
            .ok_or(IdentityError::LinkInvalid)?;
        let user = self.store.user_by_id(&link.user_id).await?;
        user.map(|u| u.username).ok_or(IdentityError::LinkInvalid)
    }

    /// Accepts an invitation: sets `password`, verifies the address and
    /// activates the account, spending the link.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: String,
        meta: &Origin,
    ) -> Result<()> {
        self.invitation_username(token).await?;
        password_policy::check(&password)?;
        let hash = self.passwords.hash(password).await?;
        let effect = LinkEffect {
            password_hash: Some(&hash),
            activate: true,
        };
        let spent = self
            .store
            .spend_email_link(
                &token_hash(token),
                LinkPurpose::Invitation.as_str(),
                effect,
                self.clock.now(),
            )
            .await?;
        let Some(user_id) = spent else {
            self.audit(
                AuditEvent::failure("account.invitation.accepted").detail("reason", "link_invalid"),
                meta,
            );
            return Err(IdentityError::LinkInvalid);
        };
        self.audit(
            AuditEvent::success("account.invitation.accepted").actor(user_id),
            meta,
        );
        Ok(())
    }

    /// Whether the link of `token` for `purpose` is live.
    pub async fn check_email_link(&self, token: &str, purpose: LinkPurpose) -> Result<()> {
        self.store
            .email_link(&token_hash(token), purpose.as_str(), self.clock.now())
            .await?
            .map(drop)
            .ok_or(IdentityError::LinkInvalid)
    }

    /// Follows a verification link: marks its address verified (and
    /// activates a sign-up that waited for it).
    pub async fn verify_email(&self, token: &str, meta: &Origin) -> Result<()> {
        let effect = LinkEffect {
            password_hash: None,
            activate: true,
        };
        let spent = self
            .store
            .spend_email_link(
                &token_hash(token),
                LinkPurpose::VerifyEmail.as_str(),
                effect,
                self.clock.now(),
            )
            .await?;
        let Some(user_id) = spent else {
            self.audit(
                AuditEvent::failure("account.email.verified").detail("reason", "link_invalid"),
                meta,
            );
            return Err(IdentityError::LinkInvalid);
        };
        self.audit(
            AuditEvent::success("account.email.verified").actor(user_id),
            meta,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_for_shape() {
        for good in ["a@example.test", " Bob.Smith+tag@mail.example.org "] {
            assert!(normalised_email(good).is_ok(), "{good}");
        }
        assert_eq!(normalised_email(" a@b.test ").unwrap(), "a@b.test");
        let long = format!("{}@example.test", "a".repeat(MAX_EMAIL_LEN));
        for bad in [
            "",
            "a",
            "@example.test",
            "a@",
            "a@b",
            "a b@c.test",
            "a@b@c.test",
            "<a@b.test>",
            &long,
        ] {
            assert!(normalised_email(bad).is_err(), "{bad:?}");
        }
    }
}
