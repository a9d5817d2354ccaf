//! A user's own gateway sessions, as their sessions page (`/sessions`,
//! docs/accounts.md) lists and ends them: each browser signed in to the
//! gateway, with its browser and address at sign-in and when it was last
//! used.
//!
//! The gateway keeps its sessions itself, so it is the one to list and
//! end them (identity lists its SSO sessions on its own page; neither
//! service reaches into the other's store). A user sees and ends only
//! their own sessions: one is named by its stored hash, and a hash that is
//! not one of the signed-in user's live sessions is refused like one that
//! ended already. Ending a session revokes its refresh token at identity
//! (RFC 7009), as logout does, so the tokens it held die with it.
//!
//! Audited: `gateway.session.ended`, with the user as actor.

use echo_core::audit::AuditEvent;
use echo_edge::Origin;

use crate::gateway::Gateway;
use crate::principal::{Credential, Principal};
use crate::session::{Session, Tokens};
use crate::{GatewayError, Result};

/// One of the user's sessions as their page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    /// The session's stored hash, which names it in the page's forms (the
    /// id itself stays in its browser's cookie).
    pub id: String,
    /// The browser looking at the page holds it.
    pub current: bool,
    pub user_agent: String,
    pub address: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

impl Gateway {
    /// The live sessions of the signed-in `principal`, the one it came
    /// with marked, most recently used first.
    pub async fn browser_sessions(&self, principal: &Principal) -> Result<Vec<BrowserSession>> {
        let current = current_session(principal)?;
        let now = self.clock.now();
        let sessions = self
            .store
            .user_sessions(&principal.subject, now, now - self.config.session_idle_ttl)
            .await?;
        Ok(sessions
            .into_iter()
            .map(|s| BrowserSession {
                current: s.id_hash == current,
                id: s.id_hash,
                user_agent: s.user_agent,
                address: s.address,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
            })
            .collect())
    }

    /// Ends the session `id` (its hash) of the signed-in `principal`,
    /// after the form's CSRF proof (`csrf`, `origin`).
    pub async fn end_browser_session(
        &self,
        principal: &Principal,
        id: &str,
        (csrf, origin): (Option<&str>, Option<&str>),
        meta: &Origin,
    ) -> Result<()> {
        self.check_session_form(principal, (csrf, origin), meta)?;
        let ended = || GatewayError::BadRequest("that session ended already".to_owned());
        let session = match self.store.session(id).await? {
            Some(session) if session.subject == principal.subject => session,
            _ => return Err(ended()),
        };
        self.end_and_revoke(&session).await?;
        self.audit(
            AuditEvent::success("gateway.session.ended")
                .actor(principal.subject.as_str())
                .detail("current", id == current_session(principal)?),
            meta,
        );
        Ok(())
    }

    /// Ends `session` here and revokes its tokens at identity (RFC 7009):
    /// its refresh token (and so its family) dies with it, so a copy taken
    /// from the session store is worth nothing. Answers its tokens.
    pub(crate) async fn end_and_revoke(&self, session: &Session) -> Result<Tokens> {
        self.store.delete_session(&session.id_hash).await?;
        self.tokens.forget(&session.id_hash);
        let tokens = Tokens::open(&self.sealer, &session.id_hash, &session.tokens)?;
        let revoked = tokens
            .refresh_token
            .as_deref()
            .unwrap_or(&tokens.access_token);
        if let Err(e) = self.identity.revoke(revoked).await {
            tracing::warn!(error = %e, "cannot revoke an ended session's token");
        }
        Ok(tokens)
    }
}

/// The hash of the session `principal` came with; a bearer token has none.
fn current_session(principal: &Principal) -> Result<&str> {
    match &principal.credential {
        Credential::Session { id_hash, .. } => Ok(id_hash),
        Credential::Bearer { .. } => Err(GatewayError::SessionExpired),
    }
}
