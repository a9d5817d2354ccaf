//! What `echod up` sets up on every start, idempotently: the bootstrap
//! admin on first run, and Echo's own services registered at identity as
//! its clients (the gateway, the worker, docs, the parser), each with the
//! grants, audiences and scopes it needs now.

use std::path::Path;

use anyhow::Context;

use echo_core::SystemClock;
use echo_core::audit::LogAuditSink;
use echo_crypto::secret::{hash_client_secret, random_token, verify_client_secret};
use echo_gateway::{ClientSecret, GatewayFile};
use echo_identity::admin::{self, NewClient, NewUser};
use echo_identity::grant::{
    GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE,
};
use echo_identity_store::Store;

use crate::args::PipelineAudiences;
use crate::config::values::Mode;
use crate::first_party::{self, AUDIT_WRITE};
use crate::settings::write_private;
use crate::{docs, gateway, parser, worker};

/// Where production mode puts the bootstrap password (0600), under the
/// data directory.
pub const ADMIN_PASSWORD_FILE: &str = "bootstrap-admin.password";

/// First run: a bootstrap admin with a random password, printed once; in
/// production mode written to `<data>/bootstrap-admin.password` (0600)
/// instead, and that path printed, so it reaches no log.
pub async fn admin_user(store: &dyn Store, data_dir: &Path, mode: Mode) -> anyhow::Result<()> {
    if !store.list_users().await?.is_empty() {
        return Ok(());
    }
    let password = random_token();
    let admin = NewUser {
        username: "admin".into(),
        password: password.clone(),
        email: None,
        roles: vec!["admin".into()],
    };
    if mode == Mode::Production {
        let path = data_dir.join(ADMIN_PASSWORD_FILE);
        // A file left by an earlier first run that failed is replaced.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", path.display()));
            }
            _ => {}
        }
        write_private(&path, &password)?;
        admin::add_user(store, &LogAuditSink, &SystemClock, admin).await?;
        println!(
            "created bootstrap admin: username admin, password in {} (delete it once stored)",
            path.display()
        );
        return Ok(());
    }
    admin::add_user(store, &LogAuditSink, &SystemClock, admin).await?;
    println!("created bootstrap admin: username admin, password {password}");
    println!("(shown once: store it now)");
    Ok(())
}

/// Code flow with refresh tokens for browsers, client credentials for its
/// own audit writes and reads, token exchange for its routes' upstreams.
const GATEWAY_GRANTS: [&str; 4] = [
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
];
const GATEWAY_SCOPES: [&str; 5] = [
    "openid",
    "profile",
    "offline_access",
    "audit.read",
    AUDIT_WRITE,
];
/// The audiences the gateway may ask identity for: its own, the audit
/// service's, identity's (the admin console's calls to the admin API, for
/// signed-in admins only: identity's token exchange decides), and every
/// route's upstream.
fn gateway_audiences(audit_audience: &str, file: &GatewayFile) -> Vec<String> {
    let mut all = vec![
        gateway::CLIENT_ID.to_owned(),
        audit_audience.to_owned(),
        echo_identity::grant::IDENTITY_SERVICE.to_owned(),
    ];
    for spec in &file.routes {
        if !all.contains(&spec.audience) {
            all.push(spec.audience.clone());
        }
    }
    all
}

/// Registers the gateway at identity as a first-party confidential client
/// (bootstrap of `echod up`): code flow with refresh tokens for browsers,
/// client credentials for its own audit writes and reads, token exchange
/// (RFC 8693) for the upstreams of its routes. An existing registration
/// gets the current secret and whatever grants, audiences (a new route's)
/// and scopes it lacks; redirect URIs are not changed in place, so a moved
/// gateway is reported.
pub async fn register_gateway(
    store: &dyn Store,
    url: &str,
    secret: &ClientSecret,
    audit_audience: &str,
    file: &GatewayFile,
) -> anyhow::Result<()> {
    let audiences = gateway_audiences(audit_audience, file);
    let redirect_uri = format!("{url}/callback");
    let signed_out = format!("{url}/signed-out");
    let registered = register(
        store,
        Registration {
            id: gateway::CLIENT_ID,
            secret: secret.expose(),
            grants: GATEWAY_GRANTS.map(String::from).to_vec(),
            audiences,
            scopes: GATEWAY_SCOPES.map(String::from).to_vec(),
            redirect_uris: vec![redirect_uri.clone()],
            post_logout_redirect_uris: vec![signed_out.clone()],
        },
    )
    .await?;
    let Some(client) = registered else {
        println!(
            "registered the gateway as client {} of identity",
            gateway::CLIENT_ID
        );
        return Ok(());
    };
    if !client.redirect_uris.contains(&redirect_uri)
        || !client.post_logout_redirect_uris.contains(&signed_out)
    {
        tracing::warn!(
            client = gateway::CLIENT_ID,
            registered = ?client.redirect_uris,
            wanted = %redirect_uri,
            "the gateway client is registered for another address: sign-in through the gateway \
             will fail until its redirect URIs are updated"
        );
    }
    Ok(())
}

/// What a first-party client needs of its registration.
pub struct Registration<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// Registers the client, or brings an existing registration up to date:
/// the current secret (a changed one replaces the old at once) and at
/// least the grants, audiences and scopes it needs now (what an
/// administrator added stays). Redirect URIs are not changed in place:
/// the existing registration is returned for the caller to check them;
/// `None` means it was created now.
pub async fn register(
    store: &dyn Store,
    wanted: Registration<'_>,
) -> anyhow::Result<Option<echo_identity_store::Client>> {
    let Some(existing) = store.client(wanted.id).await? else {
        let new = NewClient {
            id: wanted.id.into(),
            secret: admin::ClientSecret::Provided(wanted.secret.to_owned()),
            redirect_uris: wanted.redirect_uris,
            grants: wanted.grants,
            audiences: wanted.audiences,
            scopes: wanted.scopes,
            post_logout_redirect_uris: wanted.post_logout_redirect_uris,
            allow_no_pkce: false,
        };
        admin::add_client(store, &LogAuditSink, &SystemClock, new).await?;
        tracing::info!(client = wanted.id, "registered a client at identity");
        return Ok(None);
    };
    let current = existing
        .secret_hash
        .as_deref()
        .is_some_and(|stored| verify_client_secret(wanted.secret, stored));
    if !current {
        let now = echo_core::Clock::now(&SystemClock);
        store
            .rotate_client_secret(wanted.id, &hash_client_secret(wanted.secret), now)
            .await?;
        tracing::info!(client = wanted.id, "updated a client's secret at identity");
    }
    ensure_access(
        store,
        &existing,
        &wanted.grants,
        &wanted.audiences,
        &wanted.scopes,
    )
    .await?;
    Ok(Some(existing))
}

/// A service that only uses client credentials (docs, the worker).
pub async fn register_service(
    store: &dyn Store,
    id: &str,
    secret: &str,
    audiences: Vec<String>,
    scopes: Vec<String>,
) -> anyhow::Result<()> {
    register(
        store,
        Registration {
            id,
            secret,
            grants: vec![GRANT_CLIENT_CREDENTIALS.to_owned()],
            audiences,
            scopes,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
        },
    )
    .await?;
    Ok(())
}

/// Adds to `client`'s registration whatever of `grants`, `audiences` and
/// `scopes` it lacks (an older `echod up` registered it with fewer); what
/// an administrator added stays.
async fn ensure_access(
    store: &dyn Store,
    client: &echo_identity_store::Client,
    grants: &[String],
    audiences: &[String],
    scopes: &[String],
) -> anyhow::Result<()> {
    let union = |have: &[String], want: &[String]| {
        let mut all = have.to_vec();
        all.extend(want.iter().filter(|w| !have.contains(w)).cloned());
        all
    };
    let (new_grants, new_audiences, new_scopes) = (
        union(&client.grant_types, grants),
        union(&client.audiences, audiences),
        union(&client.scopes, scopes),
    );
    if (&new_grants, &new_audiences, &new_scopes)
        == (&client.grant_types, &client.audiences, &client.scopes)
    {
        return Ok(());
    }
    store
        .update_client_access(&client.id, &new_grants, &new_audiences, &new_scopes)
        .await?;
    tracing::info!(
        client = %client.id,
        grants = ?new_grants,
        audiences = ?new_audiences,
        scopes = ?new_scopes,
        "updated a client's registration at identity"
    );
    Ok(())
}

/// The secret of each first-party client.
pub struct FirstPartySecrets {
    pub gateway: ClientSecret,
    pub worker: String,
    pub docs: String,
    pub parser: String,
}

/// Echo's own services as clients of identity: each one's secret (created
/// on first run) and registration, brought up to date.
pub async fn first_party_clients(
    store: &dyn Store,
    data_dir: &Path,
    gateway_url: &str,
    audit_audience: &str,
    audiences: &PipelineAudiences,
    gateway_file: &GatewayFile,
) -> anyhow::Result<FirstPartySecrets> {
    let secrets = FirstPartySecrets {
        gateway: gateway::client_secret(data_dir, true)?,
        worker: first_party::client_secret(data_dir, &worker::SECRET, true)?,
        docs: first_party::client_secret(data_dir, &docs::SECRET, true)?,
        parser: first_party::client_secret(data_dir, &parser::SECRET, true)?,
    };
    register_gateway(
        store,
        gateway_url,
        &secrets.gateway,
        audit_audience,
        gateway_file,
    )
    .await?;
    register_service(
        store,
        worker::CLIENT_ID,
        &secrets.worker,
        vec![
            audiences.parser_audience.clone(),
            audiences.docs_audience.clone(),
            audit_audience.to_owned(),
        ],
        worker::SCOPES.map(String::from).to_vec(),
    )
    .await?;
    for (client_id, secret) in [
        (docs::CLIENT_ID, &secrets.docs),
        (parser::CLIENT_ID, &secrets.parser),
    ] {
        register_service(
            store,
            client_id,
            secret,
            vec![audit_audience.to_owned()],
            vec![AUDIT_WRITE.into()],
        )
        .await?;
    }
    Ok(secrets)
}

/// The gateway's routes to docs (`/api/documents`, `/api/query`), added to
/// the table of its file unless the file routes those prefixes itself.
pub fn add_docs_routes(file: &mut GatewayFile, docs_url: &str, audience: &str) {
    for (prefix, path) in [
        ("/api/documents", "/v1/documents"),
        ("/api/query", "/v1/query"),
    ] {
        if file.routes.iter().any(|r| r.prefix == prefix) {
            continue;
        }
        file.routes.push(echo_gateway::RouteSpec {
            prefix: prefix.to_owned(),
            upstream: format!("{docs_url}{path}"),
            audience: audience.to_owned(),
            roles: Vec::new(),
            scopes: Vec::new(),
            strip_prefix: true,
            // Long enough for an upload of many large files to be stored.
            timeout: Some("120s".to_owned()),
            rate_limit: None,
            allow_internal_audience: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_routes_are_added_unless_the_file_routes_the_prefix() {
        let mut file = GatewayFile::parse(
            "[[routes]]\nprefix = \"/api/query\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"mine\"\n",
        )
        .unwrap();
        add_docs_routes(&mut file, "http://127.0.0.1:8083", "docs");
        let table = file.route_table().unwrap();
        let documents = table.find("/api/documents/abc").unwrap();
        assert_eq!(documents.audience, "docs");
        assert_eq!(
            documents.upstream_path("/api/documents/abc?x=1"),
            "/v1/documents/abc?x=1"
        );
        assert_eq!(documents.upstream_path("/api/documents"), "/v1/documents");
        assert_eq!(
            table.find("/api/query").unwrap().audience,
            "mine",
            "the file's own route wins"
        );
    }
}
