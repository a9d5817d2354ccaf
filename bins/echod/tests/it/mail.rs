//! Identity's mail as `echod` sets it up: the SMTP password read from
//! `ECHO_SMTP_PASSWORD_FILE` and used for AUTH over STARTTLS
//! (`?tls=required`), the server's certificate checked against the CA of
//! `ECHO_CA_FILE`; a wrong password refused by the server, the message
//! kept until the password is put right.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use echo_testkit::smtp::{SmtpOptions, SmtpServer, SmtpTls};
use echo_testkit::tls::TestCa;

use crate::{Server, echod, start};

const SMTP_USER: &str = "echo";
const SMTP_PASSWORD: &str = "the smtp password 0123";
const WAIT: Duration = Duration::from_secs(30);

/// `cmd` with identity's mail going to `smtp` as [`SMTP_USER`], over
/// STARTTLS, the password in `password_file`, trusting `ca`.
fn mailing(mut cmd: Command, smtp: &SmtpServer, password_file: &Path, ca: &TestCa) -> Command {
    cmd.env(
        "ECHO_SMTP_URL",
        format!("smtp://{SMTP_USER}@127.0.0.1:{}?tls=required", smtp.port),
    )
    .env("ECHO_SMTP_FROM", "Echo <echo@example.test>")
    .env("ECHO_SMTP_PASSWORD_FILE", password_file)
    .env_remove("ECHO_SMTP_PASSWORD")
    .env("ECHO_CA_FILE", &ca.ca_file)
    .env("ECHO_REGISTRATION", "invite");
    cmd
}

/// `echod serve identity` over `dir`, mailing as [`mailing`] says.
fn identity(dir: &Path, smtp: &SmtpServer, password_file: &Path, ca: &TestCa) -> Server {
    let mut cmd = echod(dir);
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    start(mailing(cmd, smtp, password_file, ca), 1)
}

/// Invites `name` locally: the invitation waits in identity's outbox
/// until the running `identity` sends it.
fn invite(
    dir: &Path,
    identity: &Server,
    name: &str,
    smtp: &SmtpServer,
    password_file: &Path,
    ca: &TestCa,
) {
    let mut cmd = echod(dir);
    cmd.args(["user", "invite", name, "--email"])
        .arg(format!("{name}@example.test"))
        .env("ECHO_ISSUER", format!("http://{}", identity.addr));
    let out = mailing(cmd, smtp, password_file, ca).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_smtp_password_file_is_used_for_auth_over_starttls_and_a_wrong_one_is_refused() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_with(SmtpOptions {
        tls: SmtpTls::StartTls(&ca),
        login: Some((SMTP_USER, SMTP_PASSWORD)),
    });
    let dir = echo_testkit::data_dir();
    let password_file = dir.path().join("smtp.password");
    std::fs::write(&password_file, format!("{SMTP_PASSWORD}\n")).unwrap();

    let server = identity(dir.path(), &smtp, &password_file, &ca);
    invite(dir.path(), &server, "gail", &smtp, &password_file, &ca);
    let mail = smtp.wait_for(1, WAIT).remove(0);
    assert_eq!(mail.to, ["gail@example.test"]);
    assert!(mail.link("/invitation?token=").is_some(), "{mail:?}");
    assert_eq!(mail.tls.as_deref(), Some("starttls"), "{mail:?}");
    assert_eq!(mail.login.as_deref(), Some(SMTP_USER));
    assert!(
        smtp.auth_attempts().iter().all(|a| a.ok),
        "{:?}",
        smtp.auth_attempts()
    );
    drop(server);

    std::fs::write(&password_file, "not the password\n").unwrap();
    let server = identity(dir.path(), &smtp, &password_file, &ca);
    let tried_before = smtp.auth_attempts().len();
    invite(dir.path(), &server, "hal", &smtp, &password_file, &ca);
    let deadline = Instant::now() + WAIT;
    while smtp.auth_attempts().len() == tried_before {
        assert!(Instant::now() < deadline, "identity never tried to log in");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let refused = &smtp.auth_attempts()[tried_before..];
    assert!(
        refused.iter().all(|a| !a.ok && a.login == SMTP_USER),
        "{refused:?}"
    );
    assert_eq!(smtp.messages().len(), 1, "nothing delivered without AUTH");
    drop(server);

    // The password put right: the invitation that waited goes out.
    std::fs::write(&password_file, format!("{SMTP_PASSWORD}\n")).unwrap();
    let _server = identity(dir.path(), &smtp, &password_file, &ca);
    let mail = smtp.wait_for(2, WAIT).remove(1);
    assert_eq!(mail.to, ["hal@example.test"]);
    assert_eq!(mail.login.as_deref(), Some(SMTP_USER));
}
