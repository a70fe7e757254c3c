//! Owners and on-call against the real daemon: a new incident on an owned service goes to the
//! owning team's primary (an `assigned` entry saying why), `GET /v1/oncall` and `incidentctl
//! oncall` give primary, secondary and until when at any time, overrides stand in, and bad
//! tables are refused.

use serde_json::{Value, json};

use crate::util::*;

const TEAMS: &str = r#"
[[team]]
name = "dbteam"
members = ["ana", "bo", "cy"]
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }
overrides = [{ start = "2030-01-01T00:00:00Z", end = "2030-01-02T00:00:00Z", member = "cy" }]

[[service]]
name = "db"
owner = "dbteam"

[[service]]
name = "web"
"#;

#[tokio::test]
async fn owned_services_go_to_the_primary_on_call() {
    let d = TestDaemon::prepare(TEAMS, "");
    d.wait_healthy().await;
    let db = d
        .alert(json!({"key": "db-slow", "summary": "db slow", "service": "db"}))
        .await;
    let web = d
        .alert(json!({"key": "web-slow", "summary": "web slow", "service": "web"}))
        .await;
    let now = d.get("/v1/oncall?team=dbteam").await;
    let primary = now["oncall"][0]["primary"].as_str().unwrap().to_owned();
    assert!(["ana", "bo", "cy"].contains(&primary.as_str()), "{now}");
    let inc = d.get(&format!("/v1/incidents/{db}")).await;
    assert_eq!(inc["assignee"], primary.as_str());
    let tl = d.get(&format!("/v1/incidents/{db}/timeline")).await;
    let assigned: Vec<&Value> = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "assigned")
        .collect();
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["actor"], "system");
    assert!(
        assigned[0]["note"]
            .as_str()
            .unwrap()
            .contains("on call for team dbteam, which owns db"),
        "{}",
        assigned[0]
    );
    // Not owned: nobody is assigned.
    assert!(d.get(&format!("/v1/incidents/{web}")).await["assignee"].is_null());

    // Any time: the rotation and an override.
    let at = |t: &str| format!("/v1/oncall?at={t}");
    let first = d.get(&at("2026-12-01T00:00:00Z")).await;
    assert_eq!(first["oncall"][0]["primary"], "ana");
    assert_eq!(first["oncall"][0]["secondary"], "bo");
    assert_eq!(first["oncall"][0]["until"], "2026-12-07T09:00:00.000Z");
    let swap = d.get(&at("2030-01-01T12:00:00Z")).await;
    assert_eq!(swap["oncall"][0]["primary"], "cy", "{swap}");
    assert!(swap["oncall"][0]["override_for"].is_string());
    let out = d.ctl(&["oncall", "dbteam", "--at", "2026-12-01T00:00:00Z"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("PRIMARY") && text.contains("ana") && text.contains("bo"),
        "{text}"
    );
    let (status, v) = d.raw(hyper::Method::GET, "/v1/oncall?team=nope", b"").await;
    assert_eq!(status, 404);
    assert!(v.to_string().contains("the teams are: dbteam"), "{v}");
    let (status, _) = d.raw(hyper::Method::GET, "/v1/oncall?at=soon", b"").await;
    assert_eq!(status, 400);
}

#[test]
fn bad_teams_are_refused() {
    assert_refused(
        r#"
[[team]]
name = "empty"
members = []
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }

[[team]]
name = "x"
members = ["a"]
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }
overrides = [{ start = "2026-12-02T00:00:00Z", end = "2026-12-03T00:00:00Z", member = "zed" }]

[[service]]
name = "db"
owner = "nobody"
"#,
        &[
            "incidentd.toml:2: team[0]: team `empty` has no members",
            "incidentd.toml:7: team[1]: override member `zed` is not a member of team `x`",
            "service[db].owner: no [[team]] is named `nobody`",
        ],
    );
}

fn paging(url: &str) -> String {
    format!(
        r#"
[notifications]
retry_initial = "100ms"

[[team]]
name = "dbteam"
members = ["ana", "bo", "cy"]
rotation = {{ start = "2020-01-06T09:00:00Z", every = "5000w" }}
contacts = {{ ana = ["ana-hook"], bo = ["bo-hook"] }}

[[service]]
name = "db"
owner = "dbteam"

[[channel]]
id = "ana-hook"
kind = "webhook"
url = "{url}/ana"

[[channel]]
id = "bo-hook"
kind = "webhook"
url = "{url}/bo"

[[escalation]]
id = "wake"
steps = [{{ after = "1s", channels = ["oncall:secondary"] }}]

[[route]]
match = {{ service = "db" }}
channels = ["oncall:primary"]
escalation = "wake"

[[route]]
match = {{ service = "cache" }}
channels = ["oncall:dbteam:secondary"]

[[route]]
match = {{ service = "web" }}
channels = ["oncall:primary"]
"#
    )
}

/// Routes and escalation steps naming `oncall:primary` / `oncall:secondary` reach the
/// contacts of whoever holds that turn; the secondary hears of it after the step's delay; a
/// target that reaches nobody says why in the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_escalations_page_whoever_is_on_call() {
    use crate::receiver::*;
    let (r, url) = receiver(0).await;
    let d = TestDaemon::prepare(&paging(&url), "");
    d.wait_healthy().await;
    let now = d.get("/v1/oncall?team=dbteam").await;
    assert_eq!(now["oncall"][0]["primary"], "ana", "{now}");
    assert_eq!(now["oncall"][0]["secondary"], "bo", "{now}");

    let db = d
        .alert(json!({"key": "db-down", "summary": "db down", "service": "db", "severity": "sev1"}))
        .await;
    let ana = r.wait("POST", "/ana", 1).await;
    assert_eq!(ana[0].body["event"], "opened", "{:?}", ana[0]);
    assert_eq!(ana[0].body["incident"]["id"], db);
    // The secondary only after the step's delay.
    assert!(r.on("POST", "/bo").is_empty(), "{:?}", r.got());
    let bo = r.wait("POST", "/bo", 1).await;
    assert_eq!(bo[0].body["event"], "escalation_step", "{:?}", bo[0]);
    assert_eq!(bo[0].body["incident"]["id"], db);

    // What follows goes to whoever was told.
    d.post(&format!("/v1/incidents/{db}/ack"), json!({}))
        .await
        .unwrap();
    let ana = r.wait("POST", "/ana", 2).await;
    assert_eq!(events(&ana)[1], "acknowledged", "{ana:?}");

    // A named team's secondary.
    let cache = d
        .alert(json!({"key": "cache-cold", "summary": "cache cold", "service": "cache"}))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !r
        .on("POST", "/bo")
        .iter()
        .any(|g| g.body["event"] == "opened" && g.body["incident"]["id"] == cache)
    {
        assert!(std::time::Instant::now() < deadline, "{:?}", r.got());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        r.on("POST", "/ana")
            .iter()
            .all(|g| g.body["incident"]["id"] != cache),
        "the named team's secondary only"
    );

    // Nobody owns web: the timeline says so, and nothing is sent.
    let web = d
        .alert(json!({"key": "web-slow", "summary": "web slow", "service": "web"}))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tl = timeline(&d, &web).await;
        if let Some(n) = tl.iter().find(|e| {
            e["note"]
                .as_str()
                .is_some_and(|n| n.contains("reached nobody"))
        }) {
            assert!(
                n["note"]
                    .as_str()
                    .unwrap()
                    .contains("oncall:primary: no [[team]] owns service `web`"),
                "{n}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tl:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        r.got().iter().all(|g| g.body["incident"]["id"] != web),
        "{:?}",
        r.got()
    );
}

#[test]
fn bad_oncall_targets_are_refused() {
    assert_refused(
        r#"
[[team]]
name = "dbteam"
members = ["ana"]
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }
contacts = { ana = ["nowhere"] }

[[team]]
name = "ops"
members = ["ed"]
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }
contacts = { zed = [] }

[[channel]]
id = "oncall:mine"
kind = "log"

[[route]]
channels = ["oncall:nope:primary"]

[[route]]
channels = ["oncall:tertiary"]
"#,
        &[
            "team[dbteam].contacts.ana: no [[channel]] has the id `nowhere`",
            "team[1]: contacts name `zed`, who is not a member of team `ops`",
            "channel[oncall:mine].id: `oncall:` names on-call targets",
            "route[0].channels: no [[team]] is named `nope` (in `oncall:nope:primary`)",
            "route[1].channels: `oncall:tertiary` is not an on-call target",
        ],
    );
}
