//! The CA file (`ECHO_CA_FILE`, `--ca-file`) reaches echod's database
//! connections: a `verify-full` PostgreSQL URL works with it and is
//! refused without it.

use std::path::Path;
use std::process::Output;

use echo_testkit::tls::{TestCa, TlsPostgres};

use crate::echod;

/// `echod client list` on the database `url`, with `ca_file` in
/// `ECHO_CA_FILE` and `extra` arguments after the subcommand.
fn client_list(dir: &Path, url: &str, ca_file: Option<&Path>, extra: &[&str]) -> Output {
    let mut cmd = echod(dir);
    cmd.env("ECHO_DATABASE_URL", url)
        .args(["client", "list"])
        .args(extra);
    if let Some(path) = ca_file {
        cmd.env("ECHO_CA_FILE", path);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_verify_full_database_works_with_the_ca_file_and_is_refused_without_it() {
    let ca = TestCa::new();
    let pg = TlsPostgres::start(
        "a_verify_full_database_works_with_the_ca_file_and_is_refused_without_it",
        &ca,
    );
    let dir = echo_testkit::data_dir();
    let url = pg.url("127.0.0.1", "sslmode=verify-full");

    let out = client_list(dir.path(), &url, Some(&ca.ca_file), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ca_flag = ca.ca_file.to_str().unwrap();
    let out = client_list(dir.path(), &url, None, &["--ca-file", ca_flag]);
    assert!(
        out.status.success(),
        "after the subcommand: {}",
        stderr(&out)
    );

    let out = client_list(dir.path(), &url, None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    assert!(
        error.contains("cannot open the database named by ECHO_DATABASE_URL"),
        "{error}"
    );
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[test]
fn an_unusable_ca_file_stops_echod_with_its_name() {
    let dir = echo_testkit::data_dir();
    let missing = dir.path().join("missing-ca.pem");
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (path, reason) in [
        (&missing, "No such file"),
        (&not_pem, "no certificate in it"),
    ] {
        let out = echod(dir.path())
            .env("ECHO_CA_FILE", path)
            .args(["client", "list"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let error = stderr(&out);
        assert!(
            error.contains("cannot load the CA file (ECHO_CA_FILE, --ca-file)"),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(reason), "{error}");
    }
}
