//! The admin console (`/admin/users`, `/admin/clients`, `/admin/keys`)
//! against a real identity: every action as an admin who signed in with a
//! second factor, audited at identity with that admin as actor; what is
//! refused: other users (403), admins without a second factor (identity
//! will not exchange), forms without their CSRF token, destructive
//! actions not confirmed; the admin API's refusals shown in words.

use echo_core::Clock;
use echo_identity::admin::{self, NewClient};
use reqwest::StatusCode;

use crate::common::{Browser, PASSWORD, Page, Platform, USER, unescape};

const ADMIN: &str = "root";

/// Adds the admin `root` (no second factor yet: identity has them enrol
/// at their first sign-in, as role `admin` requires).
async fn add_admin(platform: &Platform) -> String {
    platform.add_user(ADMIN, &["admin"]).await
}

/// Signs `root` in at the gateway, enrolling a TOTP authenticator on the
/// way, and lands on `return_to`; the authenticator's secret.
async fn sign_in_admin(platform: &Platform, browser: &Browser, return_to: &str) -> String {
    let login = format!(
        "{}?return_to={}",
        platform.gw("/login"),
        url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    );
    let authorize = browser.get(&login).await.location_url();
    let form = browser.get(&authorize).await;
    let mut fields = form.inputs();
    fields.insert("username".into(), ADMIN.into());
    fields.insert("password".into(), PASSWORD.into());
    let enrol = browser
        .post_form(&format!("{}/login", platform.issuer), &fields, &[])
        .await;
    assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.body);
    let secret = between(&enrol.body, r#"<code class="secret">"#, "</code>");
    let action = unescape(&between(
        &enrol.body,
        r#"<form method="post" action=""#,
        "\"",
    ));
    let mut fields = enrol.inputs();
    let code = echo_testkit::totp::code(&secret, platform.clock.now());
    fields.insert("code".into(), code);
    let codes = browser
        .post_form(&format!("{}{action}", platform.issuer), &fields, &[])
        .await;
    // The recovery codes, shown once, then on to the gateway.
    assert!(codes.body.contains("Recovery codes"), "{}", codes.body);
    let callback = unescape(&between(&codes.body, r#"<a class="button" href=""#, "\""));
    follow_to_gateway(platform, browser, &callback, return_to).await;
    secret
}

/// From `next` (identity's, relative or absolute) through identity's own
/// redirects and the gateway's callback, which must land on `return_to`.
async fn follow_to_gateway(platform: &Platform, browser: &Browser, next: &str, return_to: &str) {
    let mut next = if next.starts_with('/') {
        format!("{}{next}", platform.issuer)
    } else {
        next.to_owned()
    };
    let landed = loop {
        let page = browser.get(&next).await;
        if next.starts_with(&platform.gw("/callback")) {
            break page;
        }
        next = page.location_url();
    };
    assert_eq!(landed.location(), return_to);
}

fn between(html: &str, start: &str, end: &str) -> String {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {html}"))
        + start.len();
    let len = html[from..].find(end).expect("end marker");
    html[from..from + len].to_owned()
}

/// Posts the form whose `action` is `path` on `page`, its own fields with
/// `extra` over them.
async fn submit(
    platform: &Platform,
    browser: &Browser,
    page: &Page,
    path: &str,
    extra: &[(&str, &str)],
) -> Page {
    let marker = format!(r#"method="post" action="{path}""#);
    let at = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no form for {path} in {}", page.body));
    let end = page.body[at..].find("</form>").expect("form end") + at;
    let form = Page {
        status: page.status,
        headers: page.headers.clone(),
        body: page.body[at..end].to_owned(),
    };
    let mut fields = form.inputs();
    for (name, value) in extra {
        fields.insert((*name).into(), (*value).into());
    }
    browser.post_form(&platform.gw(path), &fields, &[]).await
}

/// The confirmation page `asked` is, confirmed.
async fn confirm(platform: &Platform, browser: &Browser, asked: &Page, path: &str) -> Page {
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert!(asked.body.contains(r#"id="question""#), "{}", asked.body);
    assert!(asked.body.contains(r#"name="confirm" value="yes""#));
    submit(platform, browser, asked, path, &[]).await
}

/// Identity's events `action` and their actors.
fn actors(platform: &Platform, action: &str) -> Vec<Option<String>> {
    platform
        .identity_audit
        .events()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| e.actor)
        .collect()
}

async fn state_of(platform: &Platform, name: &str) -> String {
    platform
        .identity_store
        .user_by_username(name)
        .await
        .unwrap()
        .expect("user")
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_and_identity_records_the_admin_as_actor() {
    let platform = Platform::start().await;
    let root = add_admin(&platform).await;
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/users").await;

    let users = browser.get(&platform.gw("/admin/users")).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    assert!(users.body.contains(">alice</a>") && users.body.contains(">root</a>"));
    assert!(users.body.contains(r#"id="nav-users" aria-current="page""#));
    let found = browser.get(&platform.gw("/admin/users?search=ROO")).await;
    assert!(found.body.contains(">root</a>") && !found.body.contains(">alice</a>"));

    // create, then the user's page
    let created = submit(
        &platform,
        &browser,
        &users,
        "/admin/users",
        &[
            ("username", "bob"),
            ("password", PASSWORD),
            ("roles", "auditor, ops"),
        ],
    )
    .await;
    assert_eq!(created.location(), "/admin/users/bob?done=created");
    let bob = browser
        .get(&platform.gw("/admin/users/bob?done=created"))
        .await;
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.body);
    assert!(bob.body.contains(r#"id="notice">Created."#));
    assert!(bob.body.contains(r#"<span class="tag">ops</span>"#));
    assert_eq!(
        actors(&platform, "admin.user.created")
            .last()
            .unwrap()
            .as_deref(),
        Some(root.as_str())
    );

    // suspend: asked first, done once confirmed, by root
    let asked = submit(&platform, &browser, &bob, "/admin/users/bob/suspend", &[]).await;
    assert!(asked.body.contains("Suspend user bob?"), "{}", asked.body);
    assert_eq!(
        state_of(&platform, "bob").await,
        "active",
        "not before confirmed"
    );
    let done = confirm(&platform, &browser, &asked, "/admin/users/bob/suspend").await;
    assert_eq!(done.location(), "/admin/users/bob?done=suspended");
    assert_eq!(state_of(&platform, "bob").await, "suspended");
    let changed = actors(&platform, "admin.user.state_changed");
    assert_eq!(
        changed,
        vec![Some(root.clone())],
        "the admin, not the gateway"
    );

    // activate, roles, unlock: no question
    let bob = browser.get(&platform.gw("/admin/users/bob")).await;
    let done = submit(&platform, &browser, &bob, "/admin/users/bob/activate", &[]).await;
    assert_eq!(done.location(), "/admin/users/bob?done=activated");
    let bob = browser.get(&platform.gw("/admin/users/bob")).await;
    let done = submit(
        &platform,
        &browser,
        &bob,
        "/admin/users/bob/roles",
        &[("roles", "auditor")],
    )
    .await;
    assert_eq!(done.location(), "/admin/users/bob?done=roles");
    let roles = platform
        .identity_store
        .user_by_username("bob")
        .await
        .unwrap()
        .unwrap()
        .roles;
    assert_eq!(roles, ["auditor"]);
    assert_eq!(
        actors(&platform, "admin.user.roles_set"),
        vec![Some(root.clone())]
    );
    let done = submit(&platform, &browser, &bob, "/admin/users/bob/unlock", &[]).await;
    assert_eq!(done.location(), "/admin/users/bob?done=unlocked");
    assert_eq!(
        actors(&platform, "admin.user.unlocked"),
        vec![Some(root.clone())]
    );

    // a stale page: its ETag no longer matches, the change is refused in words
    let stale = submit(
        &platform,
        &browser,
        &bob,
        "/admin/users/bob/roles",
        &[("roles", "ops")],
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert!(stale.body.contains("Not done") && stale.body.contains(r#"href="/admin/users""#));

    // reset MFA and delete: asked first
    let asked = submit(&platform, &browser, &bob, "/admin/users/bob/reset-mfa", &[]).await;
    let done = confirm(&platform, &browser, &asked, "/admin/users/bob/reset-mfa").await;
    assert_eq!(done.location(), "/admin/users/bob?done=mfa-reset");
    assert_eq!(
        actors(&platform, "admin.user.mfa_reset"),
        vec![Some(root.clone())]
    );
    let asked = submit(&platform, &browser, &bob, "/admin/users/bob/delete", &[]).await;
    assert!(asked.body.contains("Delete user bob?"));
    let done = confirm(&platform, &browser, &asked, "/admin/users/bob/delete").await;
    assert_eq!(done.location(), "/admin/users?done=deleted");
    assert_eq!(state_of(&platform, "bob").await, "deleted");

    // invite
    let users = browser.get(&platform.gw("/admin/users")).await;
    let invited = submit(
        &platform,
        &browser,
        &users,
        "/admin/invitations",
        &[("username", "carol")],
    )
    .await;
    assert_eq!(invited.location(), "/admin/users/carol?done=invited");
    assert_eq!(state_of(&platform, "carol").await, "invited");

    // the admin's own page shows their sessions and their recent events link
    let own = browser.get(&platform.gw("/admin/users/root")).await;
    assert!(own.body.contains(r#"id="sessions""#), "{}", own.body);
    assert!(own.body.contains(&format!(r#"href="/logs?actor={root}""#)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_edits_rotates_and_deletes_clients_and_rotates_keys() {
    let platform = Platform::start().await;
    let root = add_admin(&platform).await;
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/clients").await;

    let clients = browser.get(&platform.gw("/admin/clients")).await;
    assert!(clients.body.contains(">gateway</a>"), "{}", clients.body);
    let shown = submit(
        &platform,
        &browser,
        &clients,
        "/admin/clients",
        &[
            ("id", "web"),
            ("redirect_uris", "https://web.test/cb"),
            ("grants", "authorization_code"),
            ("audiences", "gateway"),
            ("scopes", "openid profile"),
        ],
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let secret = between(&shown.body, r#"id="client-secret">"#, "</code>");
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(shown.header("cache-control"), Some("no-store"));
    let web = browser.get(&platform.gw("/admin/clients/web")).await;
    assert!(!web.body.contains(&secret), "shown once");
    assert!(web.body.contains("https://web.test/cb"));
    let created = actors(&platform, "admin.client.created");
    assert_eq!(created.last(), Some(&Some(root.clone())), "{created:?}");

    // edit the registration
    let done = submit(
        &platform,
        &browser,
        &web,
        "/admin/clients/web/update",
        &[
            ("redirect_uris", "https://web.test/cb\nhttps://web.test/cb2"),
            ("post_logout_redirect_uris", "https://web.test/"),
        ],
    )
    .await;
    assert_eq!(done.location(), "/admin/clients/web?done=updated");
    let client = admin::find_client(&*platform.identity_store, "web")
        .await
        .unwrap();
    assert_eq!(
        client.redirect_uris,
        ["https://web.test/cb", "https://web.test/cb2"]
    );
    assert_eq!(client.post_logout_redirect_uris, ["https://web.test/"]);
    assert_eq!(
        actors(&platform, "admin.client.updated"),
        vec![Some(root.clone())]
    );
    // identity's refusal, in its words
    let web = browser.get(&platform.gw("/admin/clients/web")).await;
    let refused = submit(
        &platform,
        &browser,
        &web,
        "/admin/clients/web/update",
        &[("redirect_uris", "javascript:alert(1)")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("redirect URI"), "{}", refused.body);

    // rotate the secret with an overlap: asked, then the new one shown once
    let asked = submit(
        &platform,
        &browser,
        &web,
        "/admin/clients/web/rotate-secret",
        &[("overlap_seconds", "600")],
    )
    .await;
    assert!(asked.body.contains("600 seconds"), "{}", asked.body);
    let rotated = confirm(
        &platform,
        &browser,
        &asked,
        "/admin/clients/web/rotate-secret",
    )
    .await;
    let new_secret = between(&rotated.body, r#"id="client-secret">"#, "</code>");
    assert_ne!(new_secret, secret);
    assert!(rotated.body.contains("keeps working for 600 seconds"));
    assert_eq!(
        actors(&platform, "admin.client.secret_rotated"),
        vec![Some(root.clone())]
    );

    // delete: asked first
    let asked = submit(&platform, &browser, &web, "/admin/clients/web/delete", &[]).await;
    assert!(
        admin::find_client(&*platform.identity_store, "web")
            .await
            .is_ok()
    );
    let done = confirm(&platform, &browser, &asked, "/admin/clients/web/delete").await;
    assert_eq!(done.location(), "/admin/clients?done=deleted");
    assert!(
        admin::find_client(&*platform.identity_store, "web")
            .await
            .is_err()
    );
    assert_eq!(
        actors(&platform, "admin.client.deleted"),
        vec![Some(root.clone())]
    );

    // keys: each with its state and audience; rotate one for an audience,
    // then retire and revoke it, the table saying so at each step
    let keys = browser.get(&platform.gw("/admin/keys")).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);
    let before = key_rows(&keys.body);
    assert!(!before.is_empty(), "{}", keys.body);
    for row in &before {
        assert_eq!(
            (row.audience.as_str(), row.state.as_str()),
            ("every audience", "active"),
            "{row:?}"
        );
    }
    let asked = submit(
        &platform,
        &browser,
        &keys,
        "/admin/keys/rotate",
        &[("alg", "ES256"), ("audience", "audit")],
    )
    .await;
    let done = confirm(&platform, &browser, &asked, "/admin/keys/rotate").await;
    assert_eq!(done.location(), "/admin/keys?done=rotated");
    let keys = browser.get(&platform.gw("/admin/keys?done=rotated")).await;
    let after = key_rows(&keys.body);
    assert_eq!(after.len(), before.len() + 1, "{}", keys.body);
    let (old, new): (Vec<KeyRow>, Vec<KeyRow>) = after
        .into_iter()
        .partition(|row| before.iter().any(|b| b.kid == row.kid));
    assert_eq!(old, before, "the other keys as they were");
    let [new] = <[KeyRow; 1]>::try_from(new).unwrap();
    assert_eq!(
        (new.alg.as_str(), new.audience.as_str(), new.state.as_str()),
        ("ES256", "audit", "next"),
        "published, not signing yet, for its audience"
    );
    let kid = new.kid;
    let path = format!("/admin/keys/{kid}/retire");
    let asked = submit(&platform, &browser, &keys, &path, &[]).await;
    let done = confirm(&platform, &browser, &asked, &path).await;
    assert_eq!(done.location(), "/admin/keys?done=retired", "{}", done.body);
    let keys = browser.get(&platform.gw("/admin/keys")).await;
    let retired = key_row(&keys.body, &kid);
    assert_eq!(
        (retired.audience.as_str(), retired.state.as_str()),
        ("audit", "retired")
    );
    let path = format!("/admin/keys/{kid}/revoke");
    let asked = submit(&platform, &browser, &keys, &path, &[]).await;
    assert!(asked.body.contains("stops verifying"));
    let done = confirm(&platform, &browser, &asked, &path).await;
    assert_eq!(done.location(), "/admin/keys?done=revoked", "{}", done.body);
    let keys = browser.get(&platform.gw("/admin/keys")).await;
    assert_eq!(key_row(&keys.body, &kid).state, "revoked");
    assert!(
        !keys.body.contains(&format!("/admin/keys/{kid}/")),
        "no more actions on a revoked key"
    );
    for action in ["key.rotated", "key.retired", "key.revoked"] {
        assert_eq!(
            actors(&platform, action),
            vec![Some(root.clone())],
            "{action}"
        );
    }
}

/// A row of the keys table.
#[derive(Debug, PartialEq, Eq)]
struct KeyRow {
    kid: String,
    alg: String,
    audience: String,
    state: String,
}

/// The rows of the keys page's table, cell by cell.
fn key_rows(html: &str) -> Vec<KeyRow> {
    let table = between(html, r#"<table class="events" id="keys">"#, "</table>");
    table
        .split("<tr><td><code>")
        .skip(1)
        .map(|row| {
            let cells: Vec<String> = row
                .split("</td>")
                .take(4)
                .map(|cell| unescape(cell.rsplit('>').next().unwrap_or(cell)))
                .collect();
            let kid = row.split("</code>").next().unwrap().to_owned();
            let state_class = format!(r#"<td class="state-{}">"#, cells[3]);
            assert!(row.contains(&state_class), "the state styled: {row}");
            KeyRow {
                kid,
                alg: cells[1].clone(),
                audience: cells[2].clone(),
                state: cells[3].clone(),
            }
        })
        .collect()
}

fn key_row(html: &str, kid: &str) -> KeyRow {
    key_rows(html)
        .into_iter()
        .find(|row| row.kid == kid)
        .unwrap_or_else(|| panic!("no key {kid} in {html}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_other_users_missing_csrf_and_bad_forms() {
    let platform = Platform::start().await;
    add_admin(&platform).await;

    // an auditor: no console, and no console links
    let alice = Browser::new();
    platform.sign_in(&alice, None).await;
    for path in [
        "/admin/users",
        "/admin/clients",
        "/admin/keys",
        "/admin/users/root",
    ] {
        let page = alice.get(&platform.gw(path)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    let home = alice.get(&platform.gw("/")).await;
    assert!(home.body.contains(r#"id="nav-logs""#) && !home.body.contains(r#"id="nav-users""#));
    let refused = alice
        .post_form(
            &platform.gw("/admin/users/root/suspend"),
            &Default::default(),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(state_of(&platform, ADMIN).await, "active");

    // the admin: a form without its CSRF token, or from another origin
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/users").await;
    let alice_page = browser.get(&platform.gw("/admin/users/alice")).await;
    let mut fields = alice_page.inputs();
    fields.remove("csrf");
    let refused = browser
        .post_form(&platform.gw("/admin/users/alice/suspend"), &fields, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let with_token = alice_page.inputs();
    let foreign = browser
        .post_form(
            &platform.gw("/admin/users/alice/unlock"),
            &with_token,
            &[("origin", "https://evil.test")],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(platform.gateway_audited("gateway.csrf.refused").len(), 2);
    // a forged confirmation is still only a form: without the token, nothing
    let mut forged = fields.clone();
    forged.insert("confirm".into(), "yes".into());
    let refused = browser
        .post_form(&platform.gw("/admin/users/alice/delete"), &forged, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(state_of(&platform, USER).await, "active");

    // identity's refusal in words; an unknown action; a missing field
    let users = browser.get(&platform.gw("/admin/users")).await;
    let bad = submit(
        &platform,
        &browser,
        &users,
        "/admin/users",
        &[("username", "no spaces!"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("invalid username"), "{}", bad.body);
    let taken = submit(
        &platform,
        &browser,
        &users,
        "/admin/users",
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    let unknown = browser
        .post_form(&platform.gw("/admin/users/alice/promote"), &with_token, &[])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let missing = submit(
        &platform,
        &browser,
        &users,
        "/admin/users",
        &[("username", "dave")],
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("password is required"));
    let nobody = browser.get(&platform.gw("/admin/users/nobody")).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND, "{}", nobody.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_a_second_factor_gets_no_console() {
    let platform = Platform::start_with_identity(|c| c.mfa_required_roles.clear()).await;
    add_admin(&platform).await;
    let browser = Browser::new();
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    let form = browser.get(&authorize).await;
    let mut fields = form.inputs();
    fields.insert("username".into(), ADMIN.into());
    fields.insert("password".into(), PASSWORD.into());
    let signed_in = browser
        .post_form(&format!("{}/login", platform.issuer), &fields, &[])
        .await;
    browser.get(&signed_in.location_url()).await;
    let users = browser.get(&platform.gw("/admin/users")).await;
    assert_eq!(users.status, StatusCode::FORBIDDEN, "{}", users.body);
    assert!(users.body.contains("second factor"), "{}", users.body);
    assert!(
        platform
            .identity_audit
            .events()
            .iter()
            .all(|e| e.action != "token.exchanged"
                || e.details.get("audience").and_then(|a| a.as_str()) != Some("identity")),
        "no admin token"
    );
}

/// Identity's SSO session (8 h) ends before the gateway session (12 h):
/// from then on identity will not exchange the admin's token, and the
/// console answers a page that says so and leads to a fresh sign-in with
/// the second factor, never a 500; after it the console works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_asks_for_a_fresh_sign_in_once_identitys_session_ends() {
    let platform = Platform::start().await;
    add_admin(&platform).await;
    let browser = Browser::new();
    let secret = sign_in_admin(&platform, &browser, "/admin/users").await;
    assert_eq!(
        browser.get(&platform.gw("/admin/users")).await.status,
        StatusCode::OK
    );

    // Used every 20 minutes, the gateway session outlives identity's 8 h.
    for _ in 0..25 {
        platform.clock.advance(20 * 60);
        let account = browser.get(&platform.gw("/account")).await;
        assert_eq!(account.status, StatusCode::OK, "{}", account.body);
    }
    let ended = browser.get(&platform.gw("/admin/users?search=x")).await;
    assert_eq!(ended.status, StatusCode::FORBIDDEN, "{}", ended.body);
    assert!(
        ended.body.contains("Sign in again for the console"),
        "{}",
        ended.body
    );
    assert!(ended.body.contains("second factor"));
    let again = unescape(&between(&ended.body, r#"<a class="button" href=""#, "\""));
    assert_eq!(again, "/login?return_to=%2Fadmin%2Fusers");
    // Identity's session is gone: the login form, then the code.
    let authorize = browser.get(&platform.gw(&again)).await.location_url();
    let form = browser.get(&authorize).await;
    let mut fields = form.inputs();
    fields.insert("username".into(), ADMIN.into());
    fields.insert("password".into(), PASSWORD.into());
    let login = format!("{}/login", platform.issuer);
    let asked = browser.post_form(&login, &fields, &[]).await;
    assert!(
        asked.body.contains(r#"action="/login/mfa""#),
        "{}",
        asked.body
    );
    let mut fields = asked.inputs();
    let code = echo_testkit::totp::code(&secret, platform.clock.now());
    fields.insert("code".into(), code);
    let verified = browser
        .post_form(&format!("{login}/mfa"), &fields, &[])
        .await;
    follow_to_gateway(&platform, &browser, verified.location(), "/admin/users").await;
    let users = browser.get(&platform.gw("/admin/users")).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
}

/// The usernames in the users table of a list page, in order.
fn listed_users(html: &str) -> Vec<String> {
    let table = between(html, r#"<table class="events" id="users">"#, "</table>");
    table
        .split(r#"<tr><td><a href="/admin/users/"#)
        .skip(1)
        .map(|row| unescape(&between(row, "\">", "</a>")))
        .collect()
}

/// A list page's `#next` link, if it has one.
fn next_page(html: &str) -> Option<String> {
    let at = html.find(r#"" id="next">"#)?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    Some(unescape(&html[start..at]))
}

/// The users of every page from `first` on, following `#next`; and how
/// many pages there were.
async fn every_page(platform: &Platform, browser: &Browser, first: &str) -> (Vec<String>, usize) {
    let (mut names, mut pages, mut next) = (Vec::new(), 0, Some(first.to_owned()));
    while let Some(path) = next {
        let page = browser.get(&platform.gw(&path)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        names.extend(listed_users(&page.body));
        pages += 1;
        assert!(pages <= 10, "the pages never end");
        next = next_page(&page.body);
    }
    (names, pages)
}

/// Issue 17: more users than a page (50): `#next` leads to the rest, and
/// the pages together list every user once, in username order; a search
/// goes along to the next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_list_pages_through_every_user_once() {
    let platform = Platform::start().await;
    add_admin(&platform).await;
    let mut everyone = vec![USER.to_owned(), ADMIN.to_owned()];
    for n in 0..60 {
        let name = format!("member{n:02}");
        // Invited: no password to hash, so sixty are quick.
        admin::invite_user(
            &*platform.identity_store,
            &*platform.identity_audit,
            &*platform.clock,
            name.clone(),
            None,
            vec![],
        )
        .await
        .unwrap();
        everyone.push(name);
    }
    everyone.sort();
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/users").await;

    let first = browser.get(&platform.gw("/admin/users")).await;
    assert_eq!(listed_users(&first.body).len(), 50, "a full first page");
    let (listed, pages) = every_page(&platform, &browser, "/admin/users").await;
    assert_eq!(pages, 2);
    assert_eq!(listed, everyone, "each user once, none lost");

    let members: Vec<String> = everyone
        .iter()
        .filter(|name| name.starts_with("member"))
        .cloned()
        .collect();
    let searched = browser
        .get(&platform.gw("/admin/users?search=MEMBER"))
        .await;
    let next = next_page(&searched.body).expect("a next page");
    assert!(next.contains("search=MEMBER"), "{next}");
    let (found, pages) = every_page(&platform, &browser, "/admin/users?search=MEMBER").await;
    assert_eq!(pages, 2);
    assert_eq!(found, members);
}

/// A client-credentials token request to identity as client `id`.
async fn client_token(
    platform: &Platform,
    id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut form = form.to_vec();
    form.push(("grant_type", "client_credentials"));
    let answer = reqwest::Client::new()
        .post(format!("{}/token", platform.issuer))
        .basic_auth(id, Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap_or_default())
}

/// Registers the client-credentials client `id` (audience `audit`) in the
/// console; its secret.
async fn register_service(platform: &Platform, browser: &Browser, id: &str) -> String {
    let clients = browser.get(&platform.gw("/admin/clients")).await;
    let shown = submit(
        platform,
        browser,
        &clients,
        "/admin/clients",
        &[
            ("id", id),
            ("grants", "client_credentials"),
            ("audiences", "audit"),
            ("scopes", "audit.read"),
        ],
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    between(&shown.body, r#"id="client-secret">"#, "</code>")
}

/// Issue 17: the grants, audiences and scopes saved in the console's
/// form are what identity stores (read back on the page and in its
/// database) and enforces at /token: a removed audience or grant is
/// refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_grants_audiences_and_scopes_edited_in_the_console_take_effect() {
    let platform = Platform::start().await;
    add_admin(&platform).await;
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/clients").await;
    let secret = register_service(&platform, &browser, "svc").await;
    let audit = [("audience", "audit"), ("scope", "audit.read")];
    let docs = [("audience", "docs"), ("scope", "docs.read")];
    assert_eq!(
        client_token(&platform, "svc", &secret, &audit).await.0,
        StatusCode::OK
    );

    let svc = browser.get(&platform.gw("/admin/clients/svc")).await;
    let done = submit(
        &platform,
        &browser,
        &svc,
        "/admin/clients/svc/update",
        &[
            ("grants", "client_credentials"),
            ("audiences", "docs"),
            ("scopes", "docs.read"),
        ],
    )
    .await;
    assert_eq!(done.location(), "/admin/clients/svc?done=updated");
    let svc = browser.get(&platform.gw("/admin/clients/svc")).await;
    let shown = svc.inputs();
    assert_eq!(
        [&shown["grants"], &shown["audiences"], &shown["scopes"]],
        ["client_credentials", "docs", "docs.read"],
        "{}",
        svc.body
    );
    let stored = admin::find_client(&*platform.identity_store, "svc")
        .await
        .unwrap();
    assert_eq!(stored.grant_types, ["client_credentials"]);
    assert_eq!(stored.audiences, ["docs"]);
    assert_eq!(stored.scopes, ["docs.read"]);
    let (status, refused) = client_token(&platform, "svc", &secret, &audit).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, granted) = client_token(&platform, "svc", &secret, &docs).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["scope"], "docs.read");

    // the grant removed: client credentials are refused at once
    let done = submit(
        &platform,
        &browser,
        &svc,
        "/admin/clients/svc/update",
        &[
            ("grants", "authorization_code"),
            ("redirect_uris", "https://svc.test/cb"),
            ("audiences", "docs"),
            ("scopes", "openid"),
        ],
    )
    .await;
    assert_eq!(done.location(), "/admin/clients/svc?done=updated");
    let stored = admin::find_client(&*platform.identity_store, "svc")
        .await
        .unwrap();
    assert_eq!(stored.grant_types, ["authorization_code"]);
    let (status, refused) = client_token(&platform, "svc", &secret, &docs).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "unauthorized_client", "{refused}");

    // A client registered to go without PKCE keeps that through an edit
    // of something else (the API replaces the whole registration), and
    // loses it once the box is unticked.
    let legacy = NewClient {
        id: "legacy".into(),
        secret: admin::ClientSecret::Provided("legacy-secret-0123456789abcdefghijklmnop".into()),
        redirect_uris: vec!["https://legacy.test/cb".into()],
        grants: vec!["authorization_code".into()],
        audiences: vec!["gateway".into()],
        scopes: vec!["openid".into()],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: true,
    };
    admin::add_client(
        &*platform.identity_store,
        &*platform.identity_audit,
        &*platform.clock,
        legacy,
    )
    .await
    .unwrap();
    let page = browser.get(&platform.gw("/admin/clients/legacy")).await;
    assert_eq!(page.inputs()["allow_no_pkce"], "yes", "ticked");
    let edit = [
        ("redirect_uris", "https://legacy.test/cb"),
        ("scopes", "openid profile"),
    ];
    let path = "/admin/clients/legacy/update";
    let done = submit(&platform, &browser, &page, path, &edit).await;
    assert_eq!(done.location(), "/admin/clients/legacy?done=updated");
    let stored = admin::find_client(&*platform.identity_store, "legacy")
        .await
        .unwrap();
    assert_eq!(stored.scopes, ["openid", "profile"]);
    assert!(stored.allow_no_pkce, "kept through the edit");
    let page = browser.get(&platform.gw("/admin/clients/legacy")).await;
    let form = between(&page.body, r#"id="client-update">"#, "</form>");
    let mut fields = Page {
        status: page.status,
        headers: page.headers.clone(),
        body: form,
    }
    .inputs();
    assert_eq!(fields.remove("allow_no_pkce").as_deref(), Some("yes"));
    fields.extend(edit.map(|(name, value)| (name.to_owned(), value.to_owned())));
    let done = browser.post_form(&platform.gw(path), &fields, &[]).await;
    assert_eq!(done.location(), "/admin/clients/legacy?done=updated");
    let stored = admin::find_client(&*platform.identity_store, "legacy")
        .await
        .unwrap();
    assert!(!stored.allow_no_pkce, "unticked");
}

/// Issue 17: a secret rotated in the console with an overlap: the new
/// secret works at once and the old one until the overlap ends, then not;
/// with an overlap of 0 the old secret ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_in_the_console_overlaps_then_the_old_one_ends() {
    let platform = Platform::start().await;
    add_admin(&platform).await;
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/clients").await;
    let first = register_service(&platform, &browser, "svc").await;
    let rotate = |overlap: &'static str| {
        let (platform, browser) = (&platform, &browser);
        async move {
            let path = "/admin/clients/svc/rotate-secret";
            let svc = browser.get(&platform.gw("/admin/clients/svc")).await;
            let asked = submit(
                platform,
                browser,
                &svc,
                path,
                &[("overlap_seconds", overlap)],
            )
            .await;
            let rotated = confirm(platform, browser, &asked, path).await;
            assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
            between(&rotated.body, r#"id="client-secret">"#, "</code>")
        }
    };
    let works = |secret: String| {
        let platform = &platform;
        async move {
            let form = [("audience", "audit")];
            client_token(platform, "svc", &secret, &form).await.0 == StatusCode::OK
        }
    };

    let second = rotate("600").await;
    assert!(works(second.clone()).await, "the new secret at once");
    assert!(works(first.clone()).await, "the old one during the overlap");
    platform.clock.advance(599);
    assert!(
        works(first.clone()).await,
        "the old one to the overlap's end"
    );
    platform.clock.advance(2);
    assert!(!works(first.clone()).await, "the old one after the overlap");
    assert!(works(second.clone()).await);

    let third = rotate("0").await;
    assert!(works(third).await);
    assert!(
        !works(second).await,
        "no overlap: the old secret ends at once"
    );
}

/// Issue 17: an invitation from the console goes out by mail (under the
/// `invite` policy), recorded with the admin as actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_from_the_console_is_mailed_with_the_admin_as_actor() {
    let smtp = echo_testkit::smtp::SmtpServer::start();
    let platform = Platform::start_mailing(&smtp.url(), |config| {
        config.registration = echo_identity::RegistrationPolicy::Invite;
    })
    .await;
    let root = add_admin(&platform).await;
    let browser = Browser::new();
    sign_in_admin(&platform, &browser, "/admin/users").await;
    let users = browser.get(&platform.gw("/admin/users")).await;
    let invited = submit(
        &platform,
        &browser,
        &users,
        "/admin/invitations",
        &[("username", "erin"), ("email", "erin@example.test")],
    )
    .await;
    assert_eq!(invited.location(), "/admin/users/erin?done=invited");
    assert_eq!(
        actors(&platform, "account.invitation.sent"),
        vec![Some(root)]
    );
    let mail = smtp
        .wait_for(1, std::time::Duration::from_secs(30))
        .remove(0);
    assert_eq!(mail.to, ["erin@example.test"]);
    assert!(mail.link("/invitation?token=").is_some());
}
