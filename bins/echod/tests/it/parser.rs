//! `echod serve parser`: the real binary, tokens from a real identity, and
//! every parse in an `echod parse-worker` child process.

use std::path::Path;

use crate::{SECRET, Server, client_credentials, echod, run_with_stdin, start};

/// Registers `svc-p`, a service allowed tokens for `audience`.
fn add_service(dir: &Path, name: &str, audience: &str) {
    let mut cmd = echod(dir);
    cmd.args([
        "client",
        "add",
        name,
        "--secret-stdin",
        "--grant",
        "client_credentials",
    ])
    .args(["--audience", audience]);
    let out = run_with_stdin(cmd, &format!("{SECRET}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Identity, then the parser trusting it, with `extra` parser flags.
fn start_both(dir: &Path, extra: &[&str]) -> (Server, Server) {
    add_service(dir, "svc-p", "parser");
    add_service(dir, "svc-a", "audit");
    let mut identity = echod(dir);
    identity.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let identity = start(identity, 1);
    let mut parser = echod(dir);
    parser
        .args(["serve", "parser", "--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("http://{}", identity.addr))
        .args(extra);
    let parser = start(parser, 1);
    (identity, parser)
}

async fn token(identity: &Server, client: &str) -> String {
    let response = client_credentials(&identity.addr, client, SECRET).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn parse(
    parser: &Server,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/parse", parser.addr))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_parser_refuses_hostile_files_in_a_worker_and_keeps_answering() {
    let dir = echo_testkit::data_dir();
    let (identity, parser) = start_both(dir.path(), &[]);
    let good = token(&identity, "svc-p").await;
    let (status, body) = parse(&parser, &good, "plain words").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["type"].as_str(), body["text"].as_str()),
        (Some("txt"), Some("plain words"))
    );

    let audit_token = token(&identity, "svc-a").await;
    assert_eq!(
        parse(&parser, &audit_token, "x").await.0,
        401,
        "a token for another audience"
    );

    let hostile: [(&str, Vec<u8>); 3] = [
        (
            "truncated pdf",
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R".to_vec(),
        ),
        (
            "deep json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        ("fake zip", b"PK\x03\x04\x14\0\0\0\x08\0garbage".to_vec()),
    ];
    for (what, bytes) in hostile {
        let (status, body) = parse(&parser, &good, bytes).await;
        assert_eq!(status, 422, "{what}: {}", body["detail"]);
        assert_eq!(parse(&parser, &good, "alive").await.0, 200, "after {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_memory_or_time_limit_is_a_422() {
    let dir = echo_testkit::data_dir();
    let (identity, starved) = start_both(dir.path(), &["--parser-worker-memory-bytes", "1048576"]);
    let good = token(&identity, "svc-p").await;
    let (status, body) = parse(&starved, &good, "x".repeat(4 << 20)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("parser failed"),
        "{body}"
    );

    let mut slow = echod(dir.path());
    slow.args([
        "serve",
        "parser",
        "--listen",
        "127.0.0.1:0",
        "--parser-timeout",
        "1ms",
        "--issuer",
    ])
    .arg(format!("http://{}", identity.addr));
    let slow = start(slow, 1);
    // Megabytes through two pipes and a parse: never within 1 ms.
    let (status, body) = parse(&slow, &good, "words ".repeat(2 << 20)).await;
    assert_eq!(status, 422, "{}", body["detail"]);
    assert!(
        body["detail"].as_str().unwrap().contains("took too long"),
        "{body}"
    );
}

/// The worker processes the parser keeps, read from /proc (children of any
/// of its threads).
fn worker_pids(parser: &Server) -> std::collections::BTreeSet<u32> {
    let tasks = format!("/proc/{}/task", parser.child.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("children")).ok())
        .flat_map(|pids| {
            pids.split_whitespace()
                .map(|pid| pid.parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Workers are reused, and a reused worker never hands one caller's text
/// to another: 40 parses, 8 sent at a time (the parser runs as many at once
/// as the machine has cores), each gets its own text back, from a few
/// processes rather than 40. A worker that failed is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_reused_and_each_parse_gets_its_own_answer() {
    let dir = echo_testkit::data_dir();
    let (identity, parser) = start_both(dir.path(), &[]);
    let good = token(&identity, "svc-p").await;
    let mut rounds = Vec::new();
    for round in 0..5 {
        let parses = (0..8).map(|i| {
            let text = format!("document {round}-{i} says {}", "words ".repeat(i * 50));
            let (parser, good) = (&parser, &good);
            async move { (text.clone(), parse(parser, good, text).await) }
        });
        for (text, (status, body)) in futures_util::future::join_all(parses).await {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["text"].as_str(), Some(text.as_str()));
        }
        rounds.push(worker_pids(&parser));
    }
    let all: std::collections::BTreeSet<u32> = rounds.iter().flatten().copied().collect();
    let throughout: Vec<&u32> = all
        .iter()
        .filter(|pid| rounds.iter().all(|round| round.contains(pid)))
        .collect();
    assert!(
        !throughout.is_empty() && all.len() <= 8,
        "40 parses in 5 rounds: workers {rounds:?}; none lived through every round"
    );

    // A worker that fails is not reused: the next parse still answers.
    let (status, _) = parse(
        &parser,
        &good,
        b"PK\x03\x04\x14\0\0\0\x08\0garbage".to_vec(),
    )
    .await;
    assert_eq!(status, 422);
    let (status, body) = parse(&parser, &good, "still here").await;
    assert_eq!((status, body["text"].as_str()), (200, Some("still here")));
}

/// The child processes of `pid` (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            listed
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    children
}

/// Issue 14 §19: a parse worker gets none of the service's secrets (its
/// environment is empty), no file descriptor the service inherited, and
/// limits on CPU time, address space and open files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_workers_inherit_no_secret_no_descriptor_and_run_limited() {
    let dir = echo_testkit::data_dir();
    add_service(dir.path(), "svc-p", "parser");
    let mut identity = echod(dir.path());
    identity.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let identity = start(identity, 1);
    // The parser inherits fd 7 from its parent (bash opens it without
    // close-on-exec) and has secrets in its environment.
    let mut parser = std::process::Command::new("bash");
    parser
        .args(["-c", r#"exec 7</etc/hostname; exec "$@""#, "bash"])
        .arg(env!("CARGO_BIN_EXE_echod"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "parser", "--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("http://{}", identity.addr))
        .env("ECHO_LOG", "warn")
        .env("ECHO_PARSER_CLIENT_SECRET", "canary-client-secret")
        .env("ECHO_LLM_API_KEY", "canary-llm-key")
        .env("ECHO_MASTER_KEY", "canary-master-key");
    let parser = start(parser, 1);
    let inherited = std::fs::read_link(format!("/proc/{}/fd/7", parser.pid())).unwrap();
    assert_eq!(
        inherited,
        Path::new("/etc/hostname"),
        "the service itself got fd 7"
    );
    let good = token(&identity, "svc-p").await;
    assert_eq!(parse(&parser, &good, "plain words").await.0, 200);
    // The worker that answered is kept for the next parse: look at it.
    let workers = children(parser.pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    let worker = workers[0];
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    // Nothing of the service's: only the allocator's setting that keeps
    // the worker's memory limit whole (isolate.rs).
    let vars: Vec<&[u8]> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .collect();
    assert_eq!(
        vars,
        [b"MIMALLOC_ARENA_RESERVE=0".as_slice()],
        "{}",
        String::from_utf8_lossy(&environ)
    );
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "only stdin, stdout, stderr");
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {limits}"))
            .split_whitespace()
            .rev()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert_eq!(limit("Max open files"), "16");
    assert_ne!(limit("Max cpu time"), "unlimited");
    assert_ne!(limit("Max address space"), "unlimited");
}
