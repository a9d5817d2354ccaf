//! Issue 13: inside `echod up`, every service refuses a bad token the same
//! way (401, the RFC 6750 challenge, an RFC 9457 problem) and each refusal
//! reaches the audit log once, under one name, as the refusing service's.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::echod;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_audits_every_refused_caller_under_one_name() {
    let dir = echo_testkit::data_dir();
    let server = crate::start_up(crate::up_on_free_ports(dir.path()));
    let [identity, audit, gateway, docs, parser] = [0, 1, 2, 3, 4].map(|i| &server.ready[i]);
    let client = reqwest::Client::new();
    let calls = [
        (
            "identity",
            client.get(format!("http://{identity}/userinfo")),
        ),
        ("audit", client.get(format!("http://{audit}/v1/events"))),
        ("gateway", client.get(format!("http://{gateway}/api/me"))),
        ("docs", client.get(format!("http://{docs}/v1/documents"))),
        (
            "parser",
            client
                .post(format!("http://{parser}/v1/parse"))
                .body("hello"),
        ),
    ];
    for (service, call) in calls {
        let refused = call.bearer_auth("not.a.token").send().await.unwrap();
        assert_eq!(refused.status(), 401, "{service}");
        assert!(
            refused.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with(r#"Bearer realm="echo", error="invalid_token""#),
            "{service}"
        );
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json",
            "{service}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["reason"], "malformed", "{service}: {body}");
    }
    let expected = ["audit", "docs", "gateway", "identity", "parser"];
    for _ in 0..100 {
        let tail = echod(dir.path())
            .args(["audit", "tail", "-n", "1000"])
            .output()
            .unwrap();
        let mut denied: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for event in String::from_utf8_lossy(&tail.stdout)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|event| event["action"] == "access.denied")
        {
            let service = event["service"].as_str().unwrap().to_owned();
            denied.entry(service).or_default().push(event);
        }
        if denied.keys().map(String::as_str).eq(expected) {
            for (service, events) in &denied {
                assert_eq!(events.len(), 1, "one event each: {events:?}");
                let event = &events[0];
                assert_eq!(event["outcome"], "failure", "{event}");
                assert_eq!(event["context"]["reason"], "malformed", "{event}");
                assert_eq!(event["context"]["service"], *service, "{event}");
                assert_eq!(event["ip"], "127.0.0.1", "{event}");
                assert!(event["actor"].is_null(), "{event}");
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not every service's refusal reached the audit log");
}
