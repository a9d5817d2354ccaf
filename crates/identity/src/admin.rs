//! Registering users and clients: what `echod user add`, `echod client
//! add` and `echod client rotate-secret` do, with every operator input
//! validated before anything is stored.

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::password::hash_password;
use echo_crypto::secret::{
    MIN_CLIENT_SECRET_LEN, b64url, generate_client_secret, hash_client_secret, random_bytes,
};
use echo_identity_store::{Client, Store, User};
use url::Url;

use crate::client_auth::parse_client_jwks;
use crate::grant::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, Grant, IDENTITY_SERVICE};
use crate::user_state::{UserState, change_state, find_user, state_of};
use crate::{IdentityError, Result};

/// How a new client authenticates.
#[derive(Debug, Clone)]
pub enum ClientSecret {
    /// The operator supplied one (at least [`MIN_CLIENT_SECRET_LEN`] long).
    Provided(String),
    /// Generate 256 random bits and show them once.
    Generate,
    /// A public client (a SPA or native app): no secret, PKCE only.
    Public,
    /// No secret: the client signs `private_key_jwt` assertions (RFC 7523
    /// §2.2) with a private key whose public half is in this JWK Set (or
    /// single JWK), as JSON.
    PrivateKeyJwt(String),
}

#[derive(Debug, Clone)]
pub struct NewClient {
    pub id: String,
    pub secret: ClientSecret,
    pub redirect_uris: Vec<String>,
    /// Empty: `authorization_code` if there are redirect URIs, else
    /// `client_credentials`.
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allow_no_pkce: bool,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
}

fn check_name(kind: &str, value: &str, extra: &[char]) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadInput(format!(
            "invalid {kind} {value:?}: use 1-64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// An absolute URI without fragment, over http(s) or a private-use scheme
/// (RFC 8252 §7.1, e.g. `com.example.app:/cb`); never `javascript:` and kin.
fn check_redirect_uri(uri: &str) -> Result<()> {
    let bad = |why: &str| IdentityError::BadInput(format!("malformed redirect URI {uri:?}: {why}"));
    let parsed = Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    // Compared as written at /authorize but redirected to as parsed: the two
    // must be the same URL (`http:///x` would otherwise send users to `x`).
    if parsed.as_str() != uri {
        return Err(bad(&format!("write it in normal form: {parsed}")));
    }
    if parsed.fragment().is_some() {
        return Err(bad("a fragment is not allowed"));
    }
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some() => Ok(()),
        "http" | "https" => Err(bad("no host")),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(bad("use http, https or a reverse-domain private scheme")),
    }
}

/// Registers a client; returns the generated secret, shown once.
pub async fn add_client(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    new: NewClient,
) -> Result<Option<String>> {
    check_name("client id", &new.id, &[])?;
    // Tokens of a client carry its id as `sub`; a client named like identity
    // or the audit service could write to other services (and the audit
    // log) as one of Echo's own.
    if [IDENTITY_SERVICE, "audit"].contains(&new.id.as_str()) {
        return Err(IdentityError::BadInput(format!(
            "client id {:?} is reserved",
            new.id
        )));
    }
    for grant in &new.grants {
        if Grant::parse(grant).is_none() {
            let known: Vec<&str> = Grant::ALL.iter().map(|g| g.as_str()).collect();
            return Err(IdentityError::BadInput(format!(
                "unknown grant {grant:?}: use one of {}",
                known.join(", ")
            )));
        }
    }
    for uri in new
        .redirect_uris
        .iter()
        .chain(&new.post_logout_redirect_uris)
    {
        check_redirect_uri(uri)?;
    }
    for audience in &new.audiences {
        if audience.is_empty() || audience.contains(char::is_whitespace) {
            return Err(IdentityError::BadInput(format!(
                "invalid audience {audience:?}"
            )));
        }
    }
    for scope in &new.scopes {
        if scope.is_empty() || scope.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(IdentityError::BadInput(format!("invalid scope {scope:?}")));
        }
    }
    let mut grants = new.grants.clone();
    if grants.is_empty() {
        grants.push(
            if new.redirect_uris.is_empty() {
                GRANT_CLIENT_CREDENTIALS
            } else {
                GRANT_AUTHORIZATION_CODE
            }
            .to_owned(),
        );
    }
    grants.dedup();
    let public = matches!(new.secret, ClientSecret::Public);
    if grants.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) && new.redirect_uris.is_empty() {
        return Err(IdentityError::BadInput(
            "grant authorization_code needs at least one --redirect-uri".into(),
        ));
    }
    if public && grants.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
        return Err(IdentityError::BadInput(
            "a public client cannot use client_credentials".into(),
        ));
    }
    if public && new.allow_no_pkce {
        return Err(IdentityError::BadInput(
            "--allow-no-pkce is only for confidential clients".into(),
        ));
    }
    let (mut jwks, mut secret_hash, mut generated) = (None, None, None);
    match new.secret {
        ClientSecret::Provided(secret) if secret.chars().count() < MIN_CLIENT_SECRET_LEN => {
            return Err(IdentityError::BadInput(format!(
                "client secret too short: at least {MIN_CLIENT_SECRET_LEN} characters (or use --generate-secret)"
            )));
        }
        ClientSecret::Provided(secret) => secret_hash = Some(hash_client_secret(&secret)),
        ClientSecret::Generate => {
            let secret = generate_client_secret();
            secret_hash = Some(hash_client_secret(&secret));
            generated = Some(secret);
        }
        ClientSecret::Public => {}
        ClientSecret::PrivateKeyJwt(text) => {
            let set = parse_client_jwks(&text)?;
            jwks = Some(
                serde_json::to_string(&set).map_err(|e| IdentityError::BadInput(e.to_string()))?,
            );
        }
    }
    let client = Client {
        id: new.id,
        secret_hash,
        redirect_uris: new.redirect_uris,
        grant_types: grants,
        audiences: new.audiences,
        scopes: new.scopes,
        post_logout_redirect_uris: new.post_logout_redirect_uris,
        allow_no_pkce: new.allow_no_pkce,
        created_at: clock.now(),
        jwks,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
    };
    store.insert_client(&client).await?;
    audit.record(
        AuditEvent::success("admin.client.created")
            .actor("cli")
            .detail("client_id", client.id.as_str())
            .detail("grants", client.grant_types.clone())
            .detail("audiences", client.audiences.clone()),
    );
    Ok(generated)
}

/// Gives a client a new generated secret, returned to be shown once. The
/// old secret keeps working for `overlap_seconds` (so deployments can
/// switch without downtime), then only the new one does. Rotating again
/// during an overlap ends the older overlap: only the last two secrets work.
pub async fn rotate_client_secret(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    client_id: &str,
    overlap_seconds: i64,
) -> Result<String> {
    if overlap_seconds < 0 {
        return Err(IdentityError::BadInput(
            "the overlap cannot be negative".into(),
        ));
    }
    let secret = generate_client_secret();
    let until = clock.now() + overlap_seconds;
    if !store
        .rotate_client_secret(client_id, &hash_client_secret(&secret), until)
        .await?
    {
        return Err(IdentityError::BadInput(format!(
            "client {client_id:?} does not exist or has no secret to rotate"
        )));
    }
    audit.record(
        AuditEvent::success("admin.client.secret_rotated")
            .actor("cli")
            .detail("client_id", client_id)
            .detail("previous_secret_valid_until", until),
    );
    Ok(secret)
}

/// Registers an active user with an argon2id password hash.
pub async fn add_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    new: NewUser,
) -> Result<User> {
    check_profile(&new.username, new.email.as_deref(), &new.roles)?;
    let password_hash = password_hash(new.password).await?;
    let user = user_record(clock, new.username, new.email, new.roles, password_hash);
    insert_user(store, audit, user).await
}

/// `echod user invite`: registers a user in state `invited`, without a
/// password; they cannot log in until activated with one.
pub async fn invite_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
) -> Result<User> {
    check_profile(&username, email.as_deref(), &roles)?;
    let user = User {
        state: UserState::Invited.as_str().to_owned(),
        ..user_record(clock, username, email, roles, String::new())
    };
    insert_user(store, audit, user).await
}

/// `echod user activate NAME [--password-stdin]`: an invited user needs a
/// password to become active; a suspended one keeps theirs unless given one.
pub async fn activate_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    username: &str,
    password: Option<String>,
) -> Result<UserState> {
    let user = find_user(store, username).await?;
    state_of(&user)?.check_transition(UserState::Active)?;
    if let Some(password) = password {
        let hash = password_hash(password).await?;
        store.set_user_password(&user.id, &hash).await?;
    }
    change_state(store, audit, clock, username, UserState::Active).await
}

/// `echod user set-roles NAME R…`: replaces the user's roles (they appear
/// in tokens as `roles` from the next token on).
pub async fn set_roles(
    store: &dyn Store,
    audit: &dyn AuditSink,
    username: &str,
    roles: Vec<String>,
) -> Result<Vec<String>> {
    let user = find_user(store, username).await?;
    check_profile(username, None, &roles)?;
    let roles = normalised_roles(roles);
    store.set_user_roles(&user.id, &roles).await?;
    audit.record(
        AuditEvent::success("admin.user.roles_set")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", username)
            .detail("roles", roles.clone()),
    );
    Ok(roles)
}

pub(crate) fn check_profile(username: &str, email: Option<&str>, roles: &[String]) -> Result<()> {
    check_name("username", username, &['@'])?;
    for role in roles {
        check_name("role", role, &[])?;
    }
    if let Some(email) = email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        return Err(IdentityError::BadInput(format!("invalid email {email:?}")));
    }
    Ok(())
}

/// Checks a new password against the policy and hashes it off the async
/// runtime.
async fn password_hash(password: String) -> Result<String> {
    crate::password_policy::check(&password)?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| IdentityError::BadInput(e.to_string()))?
        .map_err(IdentityError::from)
}

fn normalised_roles(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

/// A new active user's row.
pub(crate) fn user_record(
    clock: &dyn Clock,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
    password_hash: String,
) -> User {
    User {
        id: b64url(&random_bytes::<16>()),
        username,
        email,
        password_hash,
        roles: normalised_roles(roles),
        created_at: clock.now(),
        state: UserState::Active.as_str().to_owned(),
        email_verified: false,
    }
}

async fn insert_user(store: &dyn Store, audit: &dyn AuditSink, user: User) -> Result<User> {
    store.insert_user(&user).await?;
    audit.record(
        AuditEvent::success("admin.user.created")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", user.username.as_str())
            .detail("roles", user.roles.clone())
            .detail("state", user.state.as_str()),
    );
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_absolute_safe_and_fragment_free() {
        for ok in [
            "https://app.test/cb",
            "http://127.0.0.1:8080/callback",
            "com.example.app:/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/cb",
            "not a uri",
            "https://app.test/cb#x",
            "javascript:alert(1)",
            "data:text/html,x",
            "http:///x",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_restricted() {
        assert!(check_name("client id", "svc-a.v2_1", &[]).is_ok());
        assert!(check_name("client id", "", &[]).is_err());
        assert!(check_name("client id", "a b", &[]).is_err());
        assert!(check_name("client id", "<script>", &[]).is_err());
        assert!(check_name("username", "alice@example.test", &['@']).is_ok());
    }
}
