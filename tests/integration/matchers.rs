//! Route and silence matchers take every `where` operator (DESIGN §3.3): regexes and their
//! negation, lists, networks, presence, `not`, on any incident field; a bad one is refused
//! at file:line or with a 400.

use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

fn keys_on(r: &Receiver, path: &str) -> Vec<String> {
    let mut k: Vec<String> = r
        .on("POST", path)
        .iter()
        .filter(|g| g.body["event"] == "opened")
        .map(|g| {
            let k = g.body["incident"]["key"].as_str().unwrap_or("?");
            k.trim_start_matches("alert/").to_owned()
        })
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn routes_and_silences_take_every_operator() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[notifications]
retry_initial = "100ms"

[[channel]]
id = "db"
kind = "webhook"
url = "{url}/db"

[[channel]]
id = "rest"
kind = "webhook"
url = "{url}/rest"

[[route]]
match = {{ labels = {{ team = {{ regex = "^db" }} }}, where = {{ "labels.ip" = {{ not_cidr = ["10.0.0.0/8", "2001:db8::/32"] }} }} }}
channels = ["db"]

[[route]]
match = {{ where = {{ service = {{ not_in = ["test", "staging"] }}, "labels.noise" = {{ exists = false }} }} }}
channels = ["rest"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;

    // A silence as Alertmanager users write it: label regex, and a negative regex on the title.
    let add = d.ctl(&[
        "silence",
        "add",
        "--label",
        "team=~^web",
        "--where",
        "title!~keep",
        "--duration",
        "1h",
        "-c",
        "web deploy",
    ]);
    assert!(add.status.success(), "{add:?}");
    let shown = String::from_utf8_lossy(&add.stdout).into_owned();
    assert!(
        shown.contains("team=~^web") && shown.contains("title!~keep"),
        "{shown}"
    );

    let alerts = [
        // db team, outside the private network: the db route.
        json!({"key": "a", "summary": "a", "service": "pg", "labels": {"team": "dbops", "ip": "203.0.113.5"}}),
        // db team from 10/8: not the db route; the second route.
        json!({"key": "b", "summary": "b", "service": "pg", "labels": {"team": "dbops", "ip": "10.1.2.3"}}),
        // db team from the excluded IPv6 network: the second route.
        json!({"key": "b6", "summary": "b6", "service": "pg", "labels": {"team": "dbops", "ip": "2001:db8::7"}}),
        // A test service: no route.
        json!({"key": "c", "summary": "c", "service": "test", "labels": {"team": "web"}}),
        // A noise label: no route.
        json!({"key": "n", "summary": "n", "service": "api", "labels": {"noise": "1"}}),
        // No service at all: not_in holds on a missing field.
        json!({"key": "d", "summary": "d"}),
        // Silenced (team=~^web, title without "keep").
        json!({"key": "e", "summary": "drop me", "service": "api", "labels": {"team": "webops"}}),
        // Not silenced: the title has "keep".
        json!({"key": "f", "summary": "keep me", "service": "api", "labels": {"team": "webops"}}),
    ];
    let mut ids = std::collections::BTreeMap::new();
    for a in alerts {
        let key = a["key"].as_str().unwrap().to_owned();
        let v = d.post("/v1/alerts", a).await.unwrap();
        ids.insert(key, v["incident_id"].clone());
    }
    r.wait("POST", "/rest", 4).await;
    r.wait("POST", "/db", 1).await;
    // Whatever else was on its way has had time to arrive.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(keys_on(&r, "/db"), ["a"]);
    assert_eq!(keys_on(&r, "/rest"), ["b", "b6", "d", "f"]);

    let silenced = |key: &str| {
        let id = ids[key].clone();
        let d = &d;
        async move {
            let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
            tl["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "silenced")
        }
    };
    assert!(silenced("e").await, "team=~^web and title!~keep hold for e");
    assert!(!silenced("f").await, "f's title has keep");

    // The silence reads back as it was given.
    let list: Value =
        serde_json::from_slice(&d.ctl(&["-o", "json", "silence", "list"]).stdout).unwrap();
    let m = &list["silences"][0]["matchers"];
    assert_eq!(m["labels"]["team"], json!({"regex": "^web"}));
    assert_eq!(m["where"]["title"], json!({"not_regex": "keep"}));

    // Bad silences: an unknown field, a bad network, a bad regex: 400 with the reason.
    for (matchers, says) in [
        (
            json!({"where": {"sevrity": "sev1"}}),
            "unknown incident field `sevrity`",
        ),
        (
            json!({"labels": {"ip": {"cidr": "10.0.0.0/33"}}}),
            "prefix length",
        ),
        (json!({"labels": {"x": {"regex": "("}}}), "invalid regex"),
        (
            json!({"labels": {"x": {"frob": "y"}}}),
            "unknown condition `frob`",
        ),
    ] {
        let body = json!({"matchers": matchers, "duration": "1h", "comment": "x"});
        let (status, v) = d
            .raw(
                hyper::Method::POST,
                "/v1/silences",
                body.to_string().as_bytes(),
            )
            .await;
        assert_eq!(status, 400, "{matchers}: {v}");
        assert!(v.to_string().contains(says), "{matchers}: {v}");
    }
    let bad = d.ctl(&[
        "silence",
        "add",
        "--label",
        "team",
        "--duration",
        "1h",
        "-c",
        "x",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("key=value, key!=value"),
        "{bad:?}"
    );
}

#[test]
fn bad_route_matchers_are_refused_at_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        r#"
[[channel]]
id = "log"
kind = "log"

[[route]]
match = { where = { sevrity = "sev1" } }
channels = ["log"]

[[route]]
match = { labels = { ip = { cidr = "10.0.0.300/8" } } }
channels = ["log"]

[[route]]
match = { where = { "labels.x" = { regex = "(" } } }
channels = ["log"]
"#,
    )
    .unwrap();
    let out = check_config(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("incidentd.toml:6") && err.contains("unknown incident field `sevrity`"),
        "{err}"
    );
    assert!(
        err.contains("incidentd.toml:11") && err.contains("not an IP address"),
        "{err}"
    );
    assert!(
        err.contains("incidentd.toml:15") && err.contains("invalid regex"),
        "{err}"
    );
}
