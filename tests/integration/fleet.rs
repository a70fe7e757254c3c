//! A fleet through Alertmanager's HA cluster: two real Alertmanager peers (Debian's
//! `prometheus-alertmanager`) gossiping on loopback, three incidentd daemons with their own
//! state and host names sending to both, and a webhook receiver behind the cluster counting
//! what reaches people. Every incident must arrive once when it fires and once when it is
//! resolved: with both peers up, with one peer SIGKILLed, and after it comes back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use serde_json::{Value, json};

use crate::util::*;

/// What the receiver behind Alertmanager got: one entry per notification and alert in it,
/// as (instance, incident_id, status).
#[derive(Clone, Default)]
struct Pager(
    Arc<Mutex<Vec<(String, String, String)>>>,
    /// Every notification as it came, for the failure message.
    Arc<Mutex<Vec<String>>>,
);

impl Pager {
    fn counts(&self) -> BTreeMap<(String, String, String), usize> {
        let mut m = BTreeMap::new();
        for k in self.0.lock().unwrap().iter() {
            *m.entry(k.clone()).or_default() += 1;
        }
        m
    }

    fn count(&self, status: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, s)| s == status)
            .count()
    }

    async fn wait(&self, status: &str, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(status) < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} {status} notifications: {:#?}",
                self.count(status),
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Nothing more arrives for a while (the later peer's turn comes one peer timeout after
    /// the first's), and every notification arrived exactly once.
    async fn quiet(&self, what: &str) {
        let before = self.counts();
        tokio::time::sleep(Duration::from_secs(4)).await;
        self.assert_once(what);
        assert_eq!(before, self.counts(), "{what}: more arrived");
    }

    /// Every notification arrived exactly once.
    fn assert_once(&self, what: &str) {
        let counts = self.counts();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "{what}: sent more than once: {twice:?}\n{:#?}",
            self.1.lock().unwrap()
        );
    }
}

async fn page(State(p): State<Pager>, axum::Json(body): axum::Json<Value>) -> &'static str {
    p.1.lock().unwrap().push(format!(
        "{:?} from {}: {}",
        std::time::SystemTime::now(),
        body["externalURL"],
        body["alerts"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|a| format!(
                    "{}/{}/{}",
                    a["labels"]["instance"], a["labels"]["incident_id"], a["status"]
                ))
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    ));
    for a in body["alerts"].as_array().cloned().unwrap_or_default() {
        let l = &a["labels"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        p.0.lock()
            .unwrap()
            .push((s(&l["instance"]), s(&l["incident_id"]), s(&a["status"])));
    }
    "ok"
}

/// One Alertmanager peer, started again on the same ports and storage when asked.
struct Peer {
    dir: std::path::PathBuf,
    web: u16,
    cluster: u16,
    other_cluster: u16,
    process: Option<Reaped>,
}

impl Peer {
    fn start(&mut self) {
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                self.dir.join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.web))
            .arg(format!(
                "--cluster.listen-address=127.0.0.1:{}",
                self.cluster
            ))
            .arg(format!("--cluster.peer=127.0.0.1:{}", self.other_cluster))
            .arg("--cluster.peer-timeout=1s")
            .arg("--cluster.settle-timeout=10s")
            .arg("--cluster.reconnect-interval=1s")
            .arg(format!("--web.external-url=http://127.0.0.1:{}/", self.web))
            .arg("--log.level=debug")
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("am.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .spawn()
            .expect("prometheus-alertmanager (Debian's package)");
        self.process = Some(Reaped(child));
    }

    fn kill9(&mut self) {
        // Reaped kills with SIGKILL and waits.
        self.process = None;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("am.log")).unwrap_or_default()
    }

    /// Waits until this peer sees `n` cluster members and says it is ready.
    async fn wait_cluster(&self, http: &reqwest::Client, n: usize) {
        assert!(
            self.cluster_within(http, n, Duration::from_secs(60)).await,
            "peer {} never saw {n} members\n{}",
            self.web,
            self.log()
        );
    }

    /// Whether this peer sees `n` members and is ready within `limit`.
    async fn cluster_within(&self, http: &reqwest::Client, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let status = async {
                http.get(format!("{}/api/v2/status", self.url()))
                    .send()
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            }
            .await;
            if let Some(s) = &status
                && s["cluster"]["status"] == "ready"
                && s["cluster"]["peers"].as_array().map(Vec::len) == Some(n)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Two peers clustered on loopback. The ports are free when picked, but a test running in
/// parallel may take one before the peer binds it: the pair is started again on new ports
/// (three tries) when it does not form.
async fn start_pair(root: &Path, receiver: &str, http: &reqwest::Client) -> Vec<Peer> {
    for attempt in 0..3 {
        let (c1, c2) = (free_port(), free_port());
        let mut peers: Vec<Peer> = [(c1, c2), (c2, c1)]
            .into_iter()
            .enumerate()
            .map(|(i, (cluster, other))| {
                let dir = root.join(format!("try{attempt}-am{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                am_config(&dir, receiver);
                Peer {
                    dir,
                    web: free_port(),
                    cluster,
                    other_cluster: other,
                    process: None,
                }
            })
            .collect();
        for p in &mut peers {
            p.start();
        }
        let mut formed = true;
        for p in &peers {
            formed &= p.cluster_within(http, 2, Duration::from_secs(20)).await;
        }
        if formed {
            return peers;
        }
        eprintln!(
            "the Alertmanager pair did not form (try {attempt}):\n{}\n{}",
            peers[0].log(),
            peers[1].log()
        );
    }
    panic!("the Alertmanager pair did not form in three tries");
}

fn am_config(dir: &Path, receiver: &str) {
    std::fs::write(
        dir.join("am.yml"),
        format!(
            "route:
  receiver: pager
  group_by: ['instance', 'incident_id']
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: pager
    webhook_configs:
      - url: {receiver}
        send_resolved: true
"
        ),
    )
    .unwrap();
}

async fn raise(d: &TestDaemon, title: &str) -> String {
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": title, "severity": "sev1", "service": "db"}),
        )
        .await
        .unwrap();
    inc["id"].to_string()
}

#[tokio::test]
async fn every_hosts_incident_reaches_people_once_through_an_ha_pair_with_a_peer_down() {
    let pager = Pager::default();
    let app = axum::Router::new()
        .route("/", axum::routing::post(page))
        .with_state(pager.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let root = tempfile::tempdir().unwrap();
    let http = incidentd::http_client().unwrap();
    let mut peers = start_pair(root.path(), &receiver, &http).await;

    let config = |host: &str| {
        format!(
            r#"host = "{host}"

[notifications]
retry_initial = "200ms"
retry_max = "1s"

[[channel]]
id = "am"
kind = "alertmanager"
urls = ["{}", "{}"]
resend_interval = "2s"
timeout = "2s"
link = "https://incidents.example.com/{{{{ incident.id }}}}"

[[route]]
channels = ["am"]
"#,
            peers[0].url(),
            peers[1].url()
        )
    };
    let daemons: Vec<TestDaemon> = ["web-1", "web-2", "db-1"]
        .iter()
        .map(|h| TestDaemon::prepare(&config(h), ""))
        .collect();
    for d in &daemons {
        d.wait_healthy().await;
    }

    // Both peers up: each host's sev1 reaches the receiver once.
    for (i, d) in daemons.iter().enumerate() {
        raise(d, &format!("database down {i}")).await;
    }
    pager.wait("firing", 3, "both peers up").await;
    // Long enough for the second peer to have sent too, were it going to (its turn comes
    // one peer timeout after the first's).
    pager.quiet("both peers up").await;
    let hosts: Vec<String> = pager.counts().keys().map(|(h, _, _)| h.clone()).collect();
    assert_eq!(hosts, ["db-1", "web-1", "web-2"]);

    // The peer whose turn comes first is SIGKILLed: three more sev1s, each still once,
    // without waiting on the dead one.
    let first = first_in_turn(&peers, &http).await;
    peers[first].kill9();
    let (dead, alive) = (&peers[first], &peers[1 - first]);
    for (i, d) in daemons.iter().enumerate() {
        raise(d, &format!("replica lag {i}")).await;
    }
    pager.wait("firing", 6, "one peer down").await;
    pager.quiet("one peer down").await;
    let status = daemons[0].get("/v1/status").await;
    let by_peer: BTreeMap<String, Value> = status["notifications"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peer"].as_str().unwrap().to_owned(), p.clone()))
        .collect();
    let (down, up) = (&by_peer[&dead.url()], &by_peer[&alive.url()]);
    assert!(
        down["failed_attempts"].as_u64().unwrap() >= 1 && down["last_error"].is_string(),
        "{status:#}"
    );
    assert!(down["queued"].as_u64().unwrap() >= 1, "{status:#}");
    assert!(up["delivered"].as_u64().unwrap() >= 2, "{status:#}");
    assert!(up["last_error"].is_null(), "{status:#}");
    let metrics = daemons[0].metrics().await;
    assert!(
        metrics.contains(&format!(
            "incidentd_notification_peer_deliveries_total{{channel=\"am\",peer=\"{}\",result=\"failed\"}}",
            dead.url()
        )),
        "{metrics}"
    );

    // Resolving with the peer still down: the resolved notifications, once each.
    resolve_all(&daemons).await;
    pager
        .wait("resolved", 6, "resolving with one peer down")
        .await;
    pager.quiet("resolving with one peer down").await;

    // The peer comes back (same storage, a new member): what it missed reaches it through
    // the retries, and the notification log it gets from the cluster keeps it quiet.
    peers[first].start();
    for p in &peers {
        p.wait_cluster(&http, 2).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for d in &daemons {
        loop {
            let status = d.get("/v1/status").await;
            let caught_up = status["notifications"]["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["queued"] == 0);
            if caught_up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the returning peer was never caught up: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    pager.quiet("the peer came back").await;
    assert_eq!((pager.count("firing"), pager.count("resolved")), (6, 6));

    // With both peers up again, new incidents and their resolutions: once each.
    for (i, d) in daemons.iter().enumerate() {
        raise(d, &format!("disk full {i}")).await;
    }
    pager.wait("firing", 9, "after the return").await;
    pager.quiet("after the return").await;
    resolve_all(&daemons).await;
    pager
        .wait("resolved", 9, "resolving after the return")
        .await;
    pager.quiet("resolving after the return").await;

    // Each daemon's timeline says which peer got what.
    let tl = daemons[2].get("/v1/incidents/2/timeline").await;
    let notes: Vec<String> = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect();
    for p in &peers {
        assert!(
            notes
                .iter()
                .any(|n| n == &format!("opened sent to am (peer {})", p.url())),
            "{notes:#?}"
        );
    }
}

async fn resolve_all(daemons: &[TestDaemon]) {
    for d in daemons {
        for inc in d.incidents("status=open").await {
            d.post(&format!("/v1/incidents/{}/resolve", inc["id"]), json!({}))
                .await
                .unwrap();
        }
    }
}

/// The peer that notifies first: the first of the members' names in order.
async fn first_in_turn(peers: &[Peer], http: &reqwest::Client) -> usize {
    let mut names = Vec::new();
    for p in peers {
        let s: Value = http
            .get(format!("{}/api/v2/status", p.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        names.push(s["cluster"]["name"].as_str().unwrap().to_owned());
    }
    let first = names.iter().min().unwrap();
    names.iter().position(|n| n == first).unwrap()
}
