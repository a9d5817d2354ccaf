//! Signing access tokens (RFC 9068): a user's, by code or refresh, a
//! client's by client credentials, identity's own; choosing their
//! audience; recording that they were issued. The grants (`token.rs`,
//! `refresh.rs`, `exchange.rs`) decide what to issue and call this.

use std::sync::Arc;

use echo_core::audit::AuditEvent;
use echo_crypto::SigningKey;
use echo_crypto::secret::{b64url, random_bytes};
use echo_identity_store::{Client, User};
use serde::Serialize;

use crate::grant::{Grant, IDENTITY_SERVICE, TokenParams};
use crate::user_state::{UserState, state_of};
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// A user's freshly signed access token and what went into it.
pub(crate) struct UserAccess {
    pub user: User,
    pub access: Minted,
    pub audiences: Vec<String>,
    pub signer: Arc<SigningKey>,
}

/// A freshly signed access token and what revoking it needs.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    pub token: String,
    pub jti: String,
    pub expires_at: i64,
}

/// A one-element audience serialises as a string, as most verifiers expect.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Aud<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Aud<'a> {
    fn of(list: &'a [String]) -> Self {
        match list {
            [one] => Aud::One(one),
            many => Aud::Many(many),
        }
    }
}

/// RFC 9068 §2.2.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Aud<'a>,
    exp: i64,
    iat: i64,
    jti: String,
    client_id: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    /// RFC 9068 §2.2.1: when the user signed in (a user's tokens only), so
    /// a token exchange can tell a sign-in after a second factor was
    /// enrolled from one before (`admin::exchanged_admin_scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
}

impl Provider {
    /// The audience asked for (`resource`, RFC 8707, or `audience`), which
    /// must be one the client may have; else its first allowed audience.
    /// With an audience authorized at `/authorize`, the token request may
    /// only repeat it (RFC 8707 §2.2), not swap it for another.
    pub(crate) fn choose_audience(
        &self,
        client: &Client,
        params: &TokenParams,
        asked_at_authorize: Option<&str>,
    ) -> Result<Option<String>> {
        let asked_now = params.resource.as_deref().or(params.audience.as_deref());
        if let (Some(now), Some(authorized)) = (asked_now, asked_at_authorize)
            && now != authorized
        {
            return Err(IdentityError::InvalidTarget(
                "the audience differs from the one authorized".into(),
            ));
        }
        match asked_now.or(asked_at_authorize) {
            Some(aud) if client.audiences.iter().any(|a| a == aud) => Ok(Some(aud.to_owned())),
            Some(_) => Err(IdentityError::InvalidTarget(
                "the requested audience is not allowed for this client".into(),
            )),
            None => Ok(client.audiences.first().cloned()),
        }
    }

    /// A user's access token for `client`, by code or refresh, with the
    /// grant's scope and sign-in time (`auth_time`): for the
    /// audience authorized at `/authorize` (or asked for now, see
    /// [`Provider::choose_audience`]) and for `/userinfo`.
    pub(crate) fn user_access_token(
        &self,
        client: &Client,
        params: &TokenParams,
        user: User,
        authorized_audience: Option<&str>,
        (scope, auth_time): (&str, i64),
        now: i64,
    ) -> Result<UserAccess> {
        // A suspended or deleted user's grants stop working at once.
        if state_of(&user)? != UserState::Active {
            return Err(IdentityError::InvalidGrant("user is not active".into()));
        }
        let mut audiences: Vec<String> = self
            .choose_audience(client, params, authorized_audience)?
            .into_iter()
            .collect();
        audiences.push(self.config.userinfo_audience());
        let signer = self.keys.signer(
            self.config.access_token_alg,
            audiences.first().map(String::as_str),
            now,
        )?;
        let access = self.access_token(
            &signer,
            &user.id,
            &audiences,
            &client.id,
            scope,
            &user.roles,
            Some(auth_time),
            now,
        )?;
        Ok(UserAccess {
            user,
            access,
            audiences,
            signer,
        })
    }

    /// A token identity mints for itself as a service, for its own calls
    /// to other services (its audit writes): `sub` and `client_id` are
    /// [`IDENTITY_SERVICE`], signed like every access token.
    pub fn own_service_token(&self, audience: &str, scope: &str) -> Result<String> {
        let now = self.clock.now();
        let signer = self
            .keys
            .signer(self.config.access_token_alg, Some(audience), now)?;
        let audiences = [audience.to_owned()];
        let minted = self.access_token(
            &signer,
            IDENTITY_SERVICE,
            &audiences,
            IDENTITY_SERVICE,
            scope,
            &[],
            None,
            now,
        )?;
        Ok(minted.token)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn access_token(
        &self,
        signer: &SigningKey,
        sub: &str,
        audiences: &[String],
        client_id: &str,
        scope: &str,
        roles: &[String],
        auth_time: Option<i64>,
        now: i64,
    ) -> Result<Minted> {
        let jti = b64url(&random_bytes::<16>());
        let expires_at = now + self.config.access_token_ttl;
        let token = signer.sign(
            "at+jwt",
            &AccessClaims {
                iss: &self.config.issuer,
                sub,
                aud: Aud::of(audiences),
                exp: expires_at,
                iat: now,
                jti: jti.clone(),
                client_id,
                scope,
                roles,
                auth_time,
            },
        )?;
        Ok(Minted {
            token,
            jti,
            expires_at,
        })
    }

    pub(crate) fn audit_issued(
        &self,
        client: &Client,
        actor: &str,
        audiences: &[String],
        signer: &SigningKey,
        grant: Grant,
        meta: &Origin,
    ) {
        crate::metrics::token_issued(grant, client.id.as_str());
        self.audit(
            AuditEvent::success("token.issued")
                .actor(actor)
                .detail("client_id", client.id.as_str())
                .detail("grant", grant.as_str())
                .detail("audience", audiences.to_vec())
                .detail("kid", signer.kid()),
            meta,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_audience_is_a_string() {
        let one = vec!["audit".to_owned()];
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(serde_json::to_string(&Aud::of(&one)).unwrap(), r#""audit""#);
        assert_eq!(
            serde_json::to_string(&Aud::of(&two)).unwrap(),
            r#"["a","b"]"#
        );
    }
}
