//! `echod user …`: the lifecycle state machine, roles, lockout and MFA
//! administration, on the database a server would use.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

use crate::{echod, run_with_stdin};

/// Runs `echod user <args>`; stdout on success, else panics with stderr.
fn user(dir: &Path, args: &[&str]) -> String {
    let out = echod(dir).arg("user").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "echod user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `echod user <args>` expecting failure; its stderr.
fn user_fails(dir: &Path, args: &[&str]) -> String {
    let out = echod(dir).arg("user").args(args).output().unwrap();
    assert!(!out.status.success(), "echod user {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn add(dir: &Path, name: &str) {
    let mut cmd = echod(dir);
    cmd.args(["user", "add", name, "--password-stdin", "--role", "auditor"]);
    assert!(
        run_with_stdin(cmd, "correct horse battery\n")
            .status
            .success()
    );
}

/// The `field` line of `echod user show NAME`.
fn shown(dir: &Path, name: &str, field: &str) -> String {
    user(dir, &["show", name])
        .lines()
        .find_map(|line| line.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in user show"))
}

#[test]
fn user_states_move_only_along_the_machine() {
    let dir = echo_testkit::data_dir();
    let dir = dir.path();
    add(dir, "alice");
    assert_eq!(shown(dir, "alice", "state"), "active");
    assert_eq!(shown(dir, "alice", "roles"), "auditor");
    assert_eq!(shown(dir, "alice", "mfa"), "none");
    assert_eq!(shown(dir, "alice", "lockout"), "none");

    user(dir, &["set-roles", "alice", "admin", "auditor", "admin"]);
    assert_eq!(shown(dir, "alice", "roles"), "admin,auditor");
    user(dir, &["set-roles", "alice"]);
    assert_eq!(shown(dir, "alice", "roles"), "-");
    assert!(user_fails(dir, &["set-roles", "alice", "bad role"]).contains("invalid role"));

    assert!(user(dir, &["suspend", "alice"]).contains("active → suspended"));
    assert_eq!(shown(dir, "alice", "state"), "suspended");
    assert!(
        user_fails(dir, &["suspend", "alice"])
            .contains("from suspended to suspended (allowed from suspended: active, deleted)")
    );
    user(dir, &["activate", "alice"]);
    assert_eq!(shown(dir, "alice", "state"), "active");
    user(dir, &["delete", "alice"]);
    assert_eq!(shown(dir, "alice", "state"), "deleted");
    let error = user_fails(dir, &["activate", "alice"]);
    assert!(
        error.contains("cannot move a user from deleted to active (allowed from deleted: none)"),
        "{error}"
    );

    user(dir, &["invite", "bob", "--email", "bob@example.test"]);
    assert_eq!(shown(dir, "bob", "state"), "invited");
    assert!(
        user_fails(dir, &["suspend", "bob"])
            .contains("from invited to suspended (allowed from invited: active, deleted)")
    );
    assert!(user_fails(dir, &["activate", "bob"]).contains("no password yet"));
    let mut activate = echod(dir);
    activate.args(["user", "activate", "bob", "--password-stdin"]);
    assert!(
        run_with_stdin(activate, "bobs new password\n")
            .status
            .success()
    );
    assert_eq!(shown(dir, "bob", "state"), "active");

    assert!(user_fails(dir, &["show", "carol"]).contains("no user named \"carol\""));
    let listing = user(dir, &["list"]);
    assert!(
        listing.contains("alice") && listing.contains("bob"),
        "{listing}"
    );
}

/// Ten failures just now, and a TOTP credential, for `username` in the
/// database of `dir`, written as a running server would have.
async fn lock_out_and_enrol(dir: &Path, username: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let url = format!("sqlite://{}", dir.join("echo.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE users SET failed_logins = 10, last_failed_at = $1 WHERE username = $2")
        .bind(now)
        .bind(username)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO totp_credentials (user_id, sealed_secret, created_at, confirmed_at) \
         SELECT id, x'00', $1, $1 FROM users WHERE username = $2",
    )
    .bind(now)
    .bind(username)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn unlock_and_reset_mfa_clear_what_they_should() {
    let dir = echo_testkit::data_dir();
    let path = dir.path();
    add(path, "alice");
    lock_out_and_enrol(path, "alice").await;

    assert!(shown(path, "alice", "lockout").starts_with("locked for"));
    assert_eq!(shown(path, "alice", "mfa"), "TOTP, 0 recovery codes left");

    assert!(user(path, &["unlock", "alice"]).contains("unlocked"));
    assert_eq!(shown(path, "alice", "lockout"), "none");
    assert!(user(path, &["reset-mfa", "alice"]).contains("removed"));
    assert_eq!(shown(path, "alice", "mfa"), "none");
    assert!(user(path, &["reset-mfa", "alice"]).contains("had no second factor"));
    assert!(user_fails(path, &["unlock", "nobody"]).contains("no user named"));
}

/// Issue 17: every `echod user` command through `--server`, with no
/// database at hand, and `user list --search` both ways.
#[test]
fn every_user_command_works_through_the_admin_api() {
    let api = crate::clients::AdminApiServer::start();
    let added = api.run(
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--email",
            "bob@example.test",
            "--role",
            "auditor",
        ],
        "correct horse battery\n",
    );
    assert!(added.starts_with("added user bob (id "), "{added}");
    let invited = api.run(
        &["user", "invite", "carol", "--email", "carol@example.test"],
        "",
    );
    assert!(invited.starts_with("invited user carol"), "{invited}");
    let shown = |name: &str, field: &str| {
        api.run(&["user", "show", name], "")
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {field}"))
    };
    assert_eq!(shown("carol", "state"), "invited");
    let no_password = api.fails(&["user", "activate", "carol"]);
    assert!(no_password.contains("no password yet"), "{no_password}");
    api.run(
        &["user", "activate", "carol", "--password-stdin"],
        "carol's long passphrase\n",
    );
    assert_eq!(shown("carol", "state"), "active");

    let listed = api.run(&["user", "list"], "");
    assert!(
        listed.contains("bob ") && listed.contains("carol "),
        "{listed}"
    );
    let searched = api.run(&["user", "list", "--search", "CAROL@"], "");
    assert!(
        searched.contains("carol ") && !searched.contains("bob "),
        "{searched}"
    );

    api.run(&["user", "set-roles", "bob", "admin", "auditor"], "");
    assert_eq!(shown("bob", "roles"), "admin,auditor");
    api.run(&["user", "unlock", "bob"], "");
    api.run(&["user", "reset-mfa", "bob"], "");
    api.run(&["user", "suspend", "bob"], "");
    assert_eq!(shown("bob", "state"), "suspended");
    let backwards = api.fails(&["user", "suspend", "bob"]);
    assert!(
        backwards.contains("cannot move a user from suspended"),
        "{backwards}"
    );
    api.run(&["user", "delete", "bob"], "");
    assert_eq!(shown("bob", "state"), "deleted");
    assert!(
        api.fails(&["user", "show", "nobody"])
            .contains("no user named \"nobody\"")
    );
    assert!(
        !api.elsewhere.path().join("echo.db").exists(),
        "the commands never opened a database"
    );

    // The same search on the database.
    let dir = echo_testkit::data_dir();
    add(dir.path(), "dave");
    add(dir.path(), "erin");
    let searched = user(dir.path(), &["list", "--search", "DAV"]);
    assert!(
        searched.contains("dave ") && !searched.contains("erin "),
        "{searched}"
    );
}

/// `user show` through `--server` prints the second factor and lockout
/// lines it prints locally, from the server's own policy.
#[tokio::test]
async fn user_show_through_the_api_shows_the_second_factor_and_lockout() {
    let api = crate::clients::AdminApiServer::start();
    add(api.dir.path(), "frank");
    let shown = |field: &str| {
        api.run(&["user", "show", "frank"], "")
            .lines()
            .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {field}"))
    };
    assert_eq!(shown("mfa"), "none");
    assert_eq!(shown("lockout"), "none");
    lock_out_and_enrol(api.dir.path(), "frank").await;
    assert_eq!(shown("mfa"), "TOTP, 0 recovery codes left");
    assert!(
        shown("lockout").starts_with("locked for"),
        "{}",
        shown("lockout")
    );
    api.run(&["user", "unlock", "frank"], "");
    api.run(&["user", "reset-mfa", "frank"], "");
    assert_eq!(shown("lockout"), "none");
    assert_eq!(shown("mfa"), "none");
}

/// `user invite` mails the invitation when identity's mail is set up and
/// its policy invites by mail: through `--server` (identity sends it) and
/// locally (queued in identity's outbox in the data directory, sent by the
/// identity running on it); locally without the issuer the link would
/// point at, it refuses before inviting anyone.
#[test]
fn user_invite_mails_the_invitation_through_the_api_and_locally() {
    let smtp = echo_testkit::smtp::SmtpServer::start();
    let smtp_url = smtp.url();
    let mail_args = [
        "--smtp-url",
        smtp_url.as_str(),
        "--smtp-from",
        "Echo <echo@example.test>",
        "--registration",
        "invite",
    ];
    let api = crate::clients::AdminApiServer::start_with(&mail_args);
    let wait = std::time::Duration::from_secs(20);

    let remote = api.run(
        &["user", "invite", "gina", "--email", "gina@example.test"],
        "",
    );
    assert!(
        remote.contains("invitation mailed to gina@example.test"),
        "{remote}"
    );
    let mail = smtp.wait_for(1, wait).remove(0);
    assert_eq!(mail.to, ["gina@example.test"]);
    let link = mail.link("/invitation?token=").expect("an invitation link");
    assert!(link.starts_with(&api.url), "{link}");

    let local = |name: &str, issuer: Option<&str>| {
        let mut cmd = crate::echod(api.dir.path());
        cmd.args([
            "user",
            "invite",
            name,
            "--email",
            &format!("{name}@example.test"),
        ])
        .env("ECHO_SMTP_URL", &smtp_url)
        .env("ECHO_SMTP_FROM", "Echo <echo@example.test>")
        .env("ECHO_REGISTRATION", "invite")
        .env_remove("ECHO_ISSUER");
        if let Some(issuer) = issuer {
            cmd.env("ECHO_ISSUER", issuer);
        }
        cmd.output().unwrap()
    };
    let queued = local("hank", Some(&api.url));
    assert!(
        queued.status.success(),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    assert!(String::from_utf8_lossy(&queued.stdout).contains("invitation queued for hank@"));
    let mails = smtp.wait_for(2, wait);
    assert_eq!(mails[1].to, ["hank@example.test"]);
    assert!(mails[1].link("/invitation?token=").is_some());

    let refused = local("ivy", None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ECHO_ISSUER"));
    assert!(
        api.fails(&["user", "show", "ivy"])
            .contains("no user named"),
        "nobody invited"
    );
    // Without mail set up, an invitation is only the record, as before.
    let plain = user(
        api.dir.path(),
        &["invite", "jo", "--email", "jo@example.test"],
    );
    assert!(!plain.contains("invitation"), "{plain}");
}
