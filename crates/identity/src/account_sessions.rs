//! Sessions and applications people manage themselves: the SSO sessions
//! they hold at identity (browser, address, last seen), each ended on its
//! own or all at once, and the applications holding their refresh tokens,
//! each revocable.
//!
//! The gateway keeps its browser sessions itself. Ending a user's SSO
//! sessions and refresh tokens here ends the gateway's sessions at their
//! next refresh (the refresh token is refused) and their access tokens at
//! the next introspection (recorded as revoked); "Sign out everywhere"
//! does both.
//!
//! Audited: `account.session.ended`, `account.sessions.ended_all` and
//! `account.app.revoked`, with the user as actor.

use echo_core::audit::AuditEvent;
use echo_crypto::secret::token_hash;
use echo_edge::Origin;
use echo_identity_store::{AppGrant, User};

use crate::{IdentityError, Provider, Result};

/// One SSO session as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The stored hash of the session's id, which names it in forms (the
    /// id itself stays in its browser's cookie).
    pub id: String,
    /// The browser looking at the page holds it.
    pub current: bool,
    pub user_agent: String,
    pub address: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// What `/account/sessions` shows.
#[derive(Debug, Clone)]
pub struct SessionsView {
    pub sessions: Vec<SessionView>,
    pub apps: Vec<AppGrant>,
    pub now: i64,
}

impl Provider {
    /// The live SSO sessions and the applications of `user`, the session
    /// of `current_token` marked.
    pub async fn account_sessions(
        &self,
        user: &User,
        current_token: Option<&str>,
    ) -> Result<SessionsView> {
        let now = self.clock.now();
        let current = current_token.map(token_hash);
        let sessions = self
            .store
            .user_sessions(&user.id, now)
            .await?
            .into_iter()
            .map(|s| SessionView {
                current: current.as_deref() == Some(s.id_hash.as_str()),
                id: s.id_hash,
                user_agent: s.user_agent,
                address: s.address,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
            })
            .collect();
        let apps = self.store.user_apps(&user.id, now).await?;
        Ok(SessionsView {
            sessions,
            apps,
            now,
        })
    }

    /// Ends one SSO session of `user`, named by its hash.
    pub async fn end_account_session(&self, user: &User, id: &str, meta: &Origin) -> Result<()> {
        if !self.store.end_user_session(&user.id, id).await? {
            return Err(IdentityError::BadInput(
                "that session ended already".to_owned(),
            ));
        }
        self.audit(
            AuditEvent::success("account.session.ended").actor(user.id.as_str()),
            meta,
        );
        Ok(())
    }

    /// Ends every SSO session of `user` and revokes every refresh token
    /// (with its access token): signed out everywhere, here too.
    pub async fn end_all_account_sessions(&self, user: &User, meta: &Origin) -> Result<()> {
        self.store
            .end_all_sessions(&user.id, self.clock.now())
            .await?;
        self.forget_revocation_answers();
        self.audit(
            AuditEvent::success("account.sessions.ended_all").actor(user.id.as_str()),
            meta,
        );
        Ok(())
    }

    /// Revokes the refresh tokens (and their access tokens) `user` granted
    /// `client_id`; how many.
    pub async fn revoke_app(&self, user: &User, client_id: &str, meta: &Origin) -> Result<u64> {
        let revoked = self
            .store
            .revoke_user_app(&user.id, client_id, self.clock.now())
            .await?;
        if revoked == 0 {
            return Err(IdentityError::BadInput(
                "that application holds no access any more".to_owned(),
            ));
        }
        self.forget_revocation_answers();
        self.audit(
            AuditEvent::success("account.app.revoked")
                .actor(user.id.as_str())
                .detail("client_id", client_id)
                .detail("refresh_tokens", revoked),
            meta,
        );
        Ok(revoked)
    }
}
