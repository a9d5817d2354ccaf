//! TLS in `echod`: `up --dev-tls` runs the platform on https with a local
//! CA it makes once and reuses; the pipeline runs over https (and over
//! mutual TLS with `--client-ca`); a listener with `--client-ca` wants a
//! client certificate and still a token; a service's section of the
//! configuration file gives its listener a certificate of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use echo_tls::{CertFiles, ClientTls, DevCa};
use serde_json::Value;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    RedirectUrl, TokenResponse,
};

use super::docs::{User, add_user};
use super::{Hop, Server, echod, start_up, up_on_free_ports};

const RP_REDIRECT: &str = "https://rp.test/callback";

/// Registers the relying party `rp` (code flow, [`RP_REDIRECT`]); its secret.
fn add_relying_party(dir: &Path) -> String {
    let out = echod(dir)
        .args([
            "client",
            "add",
            "rp",
            "--generate-secret",
            "--redirect-uri",
            RP_REDIRECT,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split("store it now): ").nth(1))
        .unwrap()
        .to_owned()
}

/// An `openidconnect` relying party signs `alice` in with code + PKCE at
/// the https identity of `server`, trusting the CA in `ca`.
async fn relying_party_code_flow(server: &Server, ca: &Path, secret: &str) {
    let issuer = format!("https://{}", server.addr);
    let tls = ClientTls::new(&echo_crypto::TrustedRoots::load(Some(ca)).unwrap(), None)
        .unwrap()
        .rustls_config();
    let http = oidc_reqwest::Client::builder()
        .use_preconfigured_tls(echo_tls::rustls::ClientConfig::clone(&tls))
        .redirect(oidc_reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &http)
            .await
            .expect("discovery over https");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("rp".into()),
        Some(ClientSecret::new(secret.into())),
    )
    .set_redirect_uri(RedirectUrl::new(RP_REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let mut browser = Hop::trusting(ca);
    let (status, location, body) = browser
        .log_in_at_identity(
            &issuer,
            authorize.as_str(),
            "alice",
            "alice's long password",
        )
        .await;
    assert!(
        location.starts_with(RP_REDIRECT),
        "{status} {location} {body}"
    );
    assert!(
        browser.cookies.contains_key("__Host-echo_sso"),
        "{:?}",
        browser.cookies.keys()
    );
    let back = url::Url::parse(&location).unwrap();
    let query: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(query.get("state"), Some(state.secret()));
    assert_eq!(query.get("iss"), Some(&issuer));
    let tokens = client
        .exchange_code(AuthorizationCode::new(query["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange over https");
    let claims = tokens
        .id_token()
        .expect("ID token")
        .claims(&client.id_token_verifier(), &nonce)
        .expect("the ID token verifies with the JWKS fetched over https");
    assert_eq!(claims.issuer().as_str(), issuer);
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some("alice")
    );
}

fn client(ca: &Path, identity: Option<&DevCa>) -> reqwest::Client {
    let identity = identity.map(|ca| {
        let issued = ca.issue("test-caller").unwrap();
        CertFiles::load(&issued.cert, &issued.key).unwrap()
    });
    ClientTls::new(
        &echo_crypto::TrustedRoots::load(Some(ca)).unwrap(),
        identity,
    )
    .unwrap()
    .http_client(Duration::from_secs(30))
}

#[tokio::test]
async fn up_dev_tls_runs_everything_on_https_with_a_ca_made_once() {
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "alice");
    let rp_secret = add_relying_party(dir.path());
    let ca_path = dir.path().join("tls/ca.pem");

    let server = start_up({
        let mut up = up_on_free_ports(dir.path());
        up.arg("--dev-tls");
        up
    });
    let key_mode = std::fs::metadata(dir.path().join("tls/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the CA's key is private");
    let ca_pem = std::fs::read(&ca_path).unwrap();
    let gateway = server.up.clone().unwrap();
    assert!(gateway.starts_with("https://127.0.0.1:"), "{gateway}");

    let http = client(&ca_path, None);
    let discovery: Value = http
        .get(format!(
            "https://{}/.well-known/openid-configuration",
            server.addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], format!("https://{}", server.addr));
    assert!(
        reqwest::get(format!("https://{}/jwks", server.addr))
            .await
            .is_err(),
        "the development CA is not trusted unless asked"
    );
    relying_party_code_flow(&server, &ca_path, &rp_secret).await;

    // Through the gateway over https: a `__Host-` session, an upload that
    // docs, the worker and the parser index over https.
    let mut alice = User::sign_in_with(&server, "alice", Hop::trusting(&ca_path)).await;
    assert!(
        alice.cookies().contains_key("__Host-echo_session"),
        "{:?}",
        alice.cookies().keys()
    );
    let ids = alice
        .upload(&[("tls.txt", b"the lighthouse keeper counts ships".to_vec())])
        .await;
    let view = alice.wait_for(&ids[0], Duration::from_secs(60)).await;
    assert_eq!(view["status"], "done", "{view}");
    drop(server);

    // Again, now with audit, docs and the parser requiring client
    // certificates of the same CA: the services present theirs.
    // On the gateway's address again: its registered redirect URI names it.
    let gateway_addr = gateway.trim_start_matches("https://").to_owned();
    let mut up = echod(dir.path());
    up.args(["up", "--dev-tls", "--gateway-listen", &gateway_addr])
        .args(["--listen", "127.0.0.1:0", "--audit-listen", "127.0.0.1:0"])
        .args([
            "--docs-listen",
            "127.0.0.1:0",
            "--parser-listen",
            "127.0.0.1:0",
        ])
        .arg("--client-ca")
        .arg(&ca_path);
    let server = start_up(up);
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca_pem, "the CA is reused");
    let mut alice = User::sign_in_with(&server, "alice", Hop::trusting(&ca_path)).await;
    let ids = alice
        .upload(&[("again.txt", b"the keeper counts gulls too".to_vec())])
        .await;
    let view = alice.wait_for(&ids[0], Duration::from_secs(60)).await;
    assert_eq!(view["status"], "done", "{view}");
    let answer = alice.ask("what does the keeper count").await;
    assert!(
        !answer["citations"].as_array().unwrap().is_empty(),
        "{answer}"
    );

    // The parser: no client certificate → no connection; a certificate
    // but no token → 401; both → parsed.
    let parser = format!("https://{}/v1/parse?filename=a.txt", server.ready[4]);
    let anonymous = client(&ca_path, None);
    assert!(
        anonymous.post(&parser).body("x").send().await.is_err(),
        "no client certificate"
    );
    let ca = DevCa::open_or_create(&dir.path().join("tls")).unwrap();
    let with_cert = client(&ca_path, Some(&ca));
    let refused = with_cert.post(&parser).body("x").send().await.unwrap();
    assert_eq!(
        refused.status(),
        401,
        "mutual TLS does not replace the token"
    );

    let secret = std::fs::read_to_string(dir.path().join("worker-client.secret")).unwrap();
    let token: Value = with_cert
        .post(format!("https://{}/token", server.addr))
        .basic_auth("worker", Some(secret.trim()))
        .form(&[("grant_type", "client_credentials"), ("audience", "parser")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parsed = with_cert
        .post(&parser)
        .bearer_auth(token["access_token"].as_str().unwrap())
        .body("plain words")
        .send()
        .await
        .unwrap();
    assert_eq!(parsed.status(), 200);
    let parsed: Value = parsed.json().await.unwrap();
    assert!(parsed.to_string().contains("plain words"), "{parsed}");
}

/// The configuration file's `[gateway] tls_cert` serves the gateway of
/// `echod up` (a certificate of another CA here), the top level's
/// `tls_cert` every other listener; services call each other over https
/// trusting `ca_file` (both CAs), and a user signs in through the gateway.
#[tokio::test]
async fn up_serves_a_listener_with_its_sections_certificate_and_the_others_with_the_shared_one() {
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "alice");
    let certs = tempfile::tempdir().unwrap();
    let shared_ca =
        DevCa::open_or_create_named(&certs.path().join("shared"), "Echo shared test CA").unwrap();
    let gateway_ca =
        DevCa::open_or_create_named(&certs.path().join("gateway"), "Echo gateway test CA").unwrap();
    let shared = shared_ca.issue("services").unwrap();
    let own = gateway_ca.issue("gateway").unwrap();
    let both = certs.path().join("both.pem");
    let pem = |ca: &DevCa| std::fs::read(ca.ca_path()).unwrap();
    std::fs::write(&both, [pem(&shared_ca), pem(&gateway_ca)].concat()).unwrap();
    let file = certs.path().join("echo.toml");
    std::fs::write(
        &file,
        format!(
            "ca_file = {both:?}\ntls_cert = {:?}\ntls_key = {:?}\n\
             [gateway]\ntls_cert = {:?}\ntls_key = {:?}\n",
            shared.cert, shared.key, own.cert, own.key
        ),
    )
    .unwrap();
    let mut up = up_on_free_ports(dir.path());
    up.arg("--config").arg(&file);
    let server = start_up(up);
    let gateway = server.up.clone().unwrap();
    assert!(gateway.starts_with("https://127.0.0.1:"), "{gateway}");

    let trusting_shared = client(&shared_ca.ca_path(), None);
    let trusting_gateway = client(&gateway_ca.ca_path(), None);
    // `ready` lines: identity, audit, gateway, docs, parser.
    for (index, addr) in server.ready.iter().enumerate() {
        let (trusted, other) = if index == 2 {
            (&trusting_gateway, &trusting_shared)
        } else {
            (&trusting_shared, &trusting_gateway)
        };
        let url = format!("https://{addr}/healthz");
        let answer = trusted.get(&url).send().await;
        assert_eq!(answer.unwrap().status(), 200, "{url}");
        assert!(
            other.get(&url).send().await.is_err(),
            "{url} serves the other CA's certificate"
        );
    }
    // The gateway signs alice in at identity over https.
    let alice = User::sign_in_with(&server, "alice", Hop::trusting(&both)).await;
    assert!(
        alice.cookies().contains_key("__Host-echo_session"),
        "{:?}",
        alice.cookies().keys()
    );
}

#[test]
fn a_client_ca_without_a_certificate_is_refused_at_start() {
    let dir = echo_testkit::data_dir();
    let out = echod(dir.path())
        .args(["serve", "parser", "--listen", "127.0.0.1:0", "--client-ca"])
        .arg(dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--client-ca (ECHO_CLIENT_CA) needs --tls-cert"),
        "{stderr}"
    );

    let out = echod(dir.path())
        .args(["serve", "parser", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.path().join("missing.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert / --tls-key") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
