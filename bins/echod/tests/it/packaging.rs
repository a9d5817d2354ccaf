//! The packaging on this machine: the systemd units pass `systemd-analyze
//! verify` and rate as sandboxed, and the .deb builds, installs with
//! `dpkg -i` into a root of its own, and its echod runs. (What can be
//! checked without building an image — compose, Containerfile — is checked
//! against the command line in `src/packaging.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The services `echod@.service` is instantiated for.
const SERVICES: [&str; 6] = ["identity", "audit", "gateway", "docs", "parser", "worker"];

/// The units as the .deb installs them (each with its `.d/hardening.conf`),
/// running the binary under test, in a unit directory of their own.
fn unit_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let systemd = repo().join("packaging/systemd");
    for unit in ["echod.service", "echod@.service"] {
        let text = std::fs::read_to_string(systemd.join(unit)).expect("the unit");
        let text = text.replace("/usr/bin/echod", env!("CARGO_BIN_EXE_echod"));
        std::fs::write(dir.path().join(unit), text).expect("write the unit");
        let drop_ins = dir.path().join(format!("{unit}.d"));
        std::fs::create_dir(&drop_ins).expect("the drop-in directory");
        std::fs::copy(
            systemd.join("hardening.conf"),
            drop_ins.join("hardening.conf"),
        )
        .expect("the sandbox drop-in");
    }
    dir
}

fn systemd_analyze(units: &Path) -> Command {
    let mut command = Command::new("systemd-analyze");
    // The trailing ':' keeps the built-in path after ours, for the
    // targets the units name.
    command.env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()));
    command
}

fn unit_names() -> Vec<String> {
    std::iter::once("echod.service".to_owned())
        .chain(SERVICES.map(|s| format!("echod@{s}.service")))
        .collect()
}

/// `systemd-analyze verify` finds nothing to say about any unit, the
/// template instantiated for every service (an unknown key is only a
/// warning there, so any output fails the test).
#[test]
fn systemd_units_verify() {
    let units = unit_dir();
    let output = run(systemd_analyze(units.path())
        .args(["verify", "--man=no"])
        .args(unit_names().iter().map(|name| units.path().join(name))));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// `systemd-analyze security` rates each unit's sandbox (0 is best, 10 is
/// none): the drop-in must bring every unit to 2 or below.
#[test]
fn systemd_units_are_sandboxed() {
    let units = unit_dir();
    for name in unit_names() {
        let output = run(systemd_analyze(units.path())
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(units.path().join(&name)));
        let text = String::from_utf8_lossy(&output.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for "))
            .and_then(|(_, rest)| rest.split_once(": "))
            .and_then(|(_, level)| level.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {name}:\n{text}"));
        assert!(exposure <= 2.0, "{name}: exposure {exposure}\n{text}");
    }
}

/// The .deb built from the binary under test, installed with `dpkg -i`
/// into a root of its own (its admin directory there too; the maintainer
/// scripts run outside it, told by `DPKG_ROOT`, as Debian's chrootless
/// installs do).
struct Installed {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn install_deb() -> Installed {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("out");
    let output = run(Command::new(repo().join("packaging/deb/build-deb.sh"))
        .arg(env!("CARGO_BIN_EXE_echod"))
        .arg(&out)
        // Fast for a test; a release package is xz.
        .env("DEB_COMPRESSION", "gzip"));
    let deb = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let root = dir.path().join("root");
    let admin = root.join("var/lib/dpkg");
    for sub in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(sub)).expect("dpkg's admin directory");
    }
    std::fs::write(admin.join("status"), "").expect("dpkg's status file");
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", dir.path().join("dpkg.log").display()))
        // libc6 is not in this root's dpkg database, only on the machine.
        .args(["--force-depends", "--force-script-chrootless", "-i"])
        .arg(&deb));
    Installed { _dir: dir, root }
}

#[test]
fn deb_installs_and_its_echod_runs() {
    let installed = install_deb();
    let root = &installed.root;
    let output = run(Command::new(root.join("usr/bin/echod")).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("echod {}", env!("CARGO_PKG_VERSION"))
    );
    for file in [
        "usr/lib/systemd/system/echod.service",
        "usr/lib/systemd/system/echod@.service",
        "usr/lib/systemd/system/echod.service.d/hardening.conf",
        "usr/lib/systemd/system/echod@.service.d/hardening.conf",
        "usr/lib/sysusers.d/echod.conf",
        "etc/echod/echod.toml",
        "etc/echod/echod.env",
        "usr/share/man/man1/echod.1.gz",
        "usr/share/man/man1/echod-serve-identity.1.gz",
        "usr/share/bash-completion/completions/echod",
        "usr/share/zsh/vendor-completions/_echod",
        "usr/share/fish/vendor_completions.d/echod.fish",
        "usr/share/doc/echod/copyright",
    ] {
        assert!(root.join(file).is_file(), "the package installs /{file}");
    }
    use std::os::unix::fs::PermissionsExt;
    let env_mode = std::fs::metadata(root.join("etc/echod/echod.env"))
        .expect("echod.env")
        .permissions()
        .mode();
    assert_eq!(env_mode & 0o777, 0o600, "echod.env holds secrets");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("the root's passwd");
    assert!(
        passwd.lines().any(|l| l.starts_with("echod:")),
        "postinst creates the user echod: {passwd}"
    );
    let conffiles =
        std::fs::read_to_string(root.join("var/lib/dpkg/info/echod.conffiles")).expect("conffiles");
    assert!(conffiles.lines().any(|l| l == "/etc/echod/echod.toml"));
}

/// The packaged example passes `echod config check` as shipped.
#[test]
fn deb_example_configuration_checks() {
    let installed = install_deb();
    let data = tempfile::tempdir().expect("a data directory");
    run(Command::new(installed.root.join("usr/bin/echod"))
        .args(["config", "check"])
        .env("ECHO_CONFIG", installed.root.join("etc/echod/echod.toml"))
        .env("ECHO_DATA_DIR", data.path()));
}
