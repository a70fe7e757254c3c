//! `GET /metrics` in the Prometheus text format (version 0.0.4), on the control socket and,
//! when `[control] metrics_listen` is set, on a TCP address that serves nothing else.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use crate::event::DecodeError;
use crate::telemetry::Counter;

/// Writes metric families: one `# HELP`/`# TYPE` per name, then its samples.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric the daemon has.
pub async fn render(st: &ApiState) -> String {
    let t = &st.telemetry;
    let mut m = Exposition { out: String::new() };

    m.family(
        "incidentd_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    m.sample(
        "incidentd_uptime_seconds",
        &[],
        t.started.elapsed().as_secs_f64(),
    );

    // Stream inputs (ingest socket, POST /v1/events) and configured sources share names.
    let stream_inputs = [&t.ingest, &t.api_events];
    let sources = t.source_stats();
    m.family(
        "incidentd_events_received_total",
        "counter",
        "Events accepted from each source.",
    );
    for s in stream_inputs {
        m.sample(
            "incidentd_events_received_total",
            &[("source", s.id), ("kind", "stream")],
            s.accepted.get() as f64,
        );
    }
    for s in &sources {
        m.sample(
            "incidentd_events_received_total",
            &[("source", &s.id), ("kind", s.kind)],
            s.events.get() as f64,
        );
    }
    m.family(
        "incidentd_events_rejected_total",
        "counter",
        "Lines rejected, by source and reason.",
    );
    for s in stream_inputs {
        for (reason, c) in DecodeError::REASONS.iter().zip(&s.rejected) {
            m.sample(
                "incidentd_events_rejected_total",
                &[("source", s.id), ("reason", reason)],
                c.get() as f64,
            );
        }
    }
    m.family(
        "incidentd_source_lines_total",
        "counter",
        "Lines (datagrams, probe results) read by each configured source.",
    );
    for s in &sources {
        m.sample(
            "incidentd_source_lines_total",
            &[("source", &s.id), ("kind", s.kind)],
            s.lines.get() as f64,
        );
    }
    m.family(
        "incidentd_source_problems_total",
        "counter",
        "Lines passed on despite a problem, and events dropped, by source and reason.",
    );
    for s in &sources {
        let reasons: [(&str, &Counter); 4] = [
            ("unparsed", &s.unparsed),
            ("oversize", &s.oversize),
            ("invalid_utf8", &s.invalid_utf8),
            ("dropped", &s.dropped),
        ];
        for (reason, c) in reasons {
            m.sample(
                "incidentd_source_problems_total",
                &[("source", &s.id), ("reason", reason)],
                c.get() as f64,
            );
        }
    }
    for (name, help, get) in [
        (
            "incidentd_source_errors_total",
            "Failures of a source (unreadable files, failed probes, commands that exited).",
            (|s: &crate::telemetry::SourceStats| s.errors.get()) as fn(&_) -> u64,
        ),
        (
            "incidentd_source_rotations_total",
            "Followed files that left their path (renamed or deleted).",
            |s| s.rotations.get(),
        ),
        (
            "incidentd_source_truncations_total",
            "Followed files that were truncated or rewritten.",
            |s| s.truncations.get(),
        ),
        (
            "incidentd_source_skipped_lines_total",
            "Lines no rule could match, counted and not parsed (file sources' line filter).",
            |s| s.skipped.get(),
        ),
        (
            "incidentd_source_restarts_total",
            "Restarts of exec sources' commands.",
            |s| s.restarts.get(),
        ),
    ] {
        m.family(name, "counter", help);
        for s in &sources {
            m.sample(name, &[("source", &s.id)], get(s) as f64);
        }
    }
    // Each family's samples directly under its HELP and TYPE lines.
    for (name, help, get) in [
        (
            "incidentd_source_files",
            "Files followed by each file source.",
            (|s: &crate::telemetry::SourceStats| s.files.get()) as fn(&_) -> u64,
        ),
        (
            "incidentd_source_lag_bytes",
            "Bytes written to followed files and not read yet.",
            |s| s.lag_bytes.get(),
        ),
    ] {
        m.family(name, "gauge", help);
        for s in sources.iter().filter(|s| s.kind == "file") {
            m.sample(name, &[("source", &s.id)], get(s) as f64);
        }
    }

    m.family(
        "incidentd_event_queue_depth",
        "gauge",
        "Events waiting for the engine.",
    );
    m.sample(
        "incidentd_event_queue_depth",
        &[],
        (st.event_queue_capacity - st.events.capacity()) as f64,
    );
    m.family(
        "incidentd_event_queue_capacity",
        "gauge",
        "Capacity of the sources → engine queue.",
    );
    m.sample(
        "incidentd_event_queue_capacity",
        &[],
        st.event_queue_capacity as f64,
    );
    m.family(
        "incidentd_engine_events_total",
        "counter",
        "Events the engine processed.",
    );
    m.sample(
        "incidentd_engine_events_total",
        &[],
        t.engine_events.get() as f64,
    );

    if let Some(rules) = st.engine.rules().await {
        m.family(
            "incidentd_rule_matched_total",
            "counter",
            "Events each rule counted.",
        );
        for r in &rules {
            m.sample(
                "incidentd_rule_matched_total",
                &[("rule", &r.id)],
                r.matched as f64,
            );
        }
        m.family(
            "incidentd_detections_total",
            "counter",
            "Detections by rule.",
        );
        for r in &rules {
            m.sample(
                "incidentd_detections_total",
                &[("rule", &r.id)],
                r.fired as f64,
            );
        }
        m.family(
            "incidentd_rule_groups",
            "gauge",
            "Groups holding window state, by rule.",
        );
        for r in &rules {
            m.sample("incidentd_rule_groups", &[("rule", &r.id)], r.groups as f64);
        }
    }
    for (name, help, h) in [
        (
            "incidentd_event_to_detection_seconds",
            "From an event's arrival at its source to the detection it caused.",
            &t.event_to_detection,
        ),
        (
            "incidentd_detection_to_incident_seconds",
            "From a detection to its incident change being durable.",
            &t.detection_to_incident,
        ),
        (
            "incidentd_event_to_incident_seconds",
            "From an event's arrival to the incident change it caused being durable.",
            &t.event_to_incident,
        ),
    ] {
        m.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        // One snapshot, so `_count` always equals the `+Inf` bucket.
        let cumulative = h.cumulative();
        let total = cumulative.last().map_or(0, |(_, c)| *c);
        for (bound, count) in cumulative {
            let le = if bound.is_finite() {
                bound.to_string()
            } else {
                "+Inf".to_owned()
            };
            m.sample(&bucket, &[("le", &le)], count as f64);
        }
        m.sample(&format!("{name}_sum"), &[], h.sum_seconds());
        m.sample(&format!("{name}_count"), &[], total as f64);
    }
    m.family(
        "incidentd_detections_replayed_total",
        "counter",
        "Detections skipped after a crash because they were already applied.",
    );
    m.sample(
        "incidentd_detections_replayed_total",
        &[],
        t.detections_replayed.get() as f64,
    );
    m.family(
        "incidentd_incident_changes_total",
        "counter",
        "What detections did to incidents.",
    );
    for (what, c) in [
        ("created", &t.incidents_created),
        ("sla_breached", &t.sla_breaches),
        ("deduplicated", &t.incidents_deduplicated),
        ("correlated", &t.incidents_correlated),
        ("reopened", &t.incidents_reopened),
        ("rate_limited", &t.incidents_rate_limited),
    ] {
        m.sample(
            "incidentd_incident_changes_total",
            &[("change", what)],
            c.get() as f64,
        );
    }
    m.family(
        "incidentd_action_runs_total",
        "counter",
        "Action runs by result (held: stopped by the breaker, cooldown or a silence).",
    );
    for (result, c) in [
        ("succeeded", &t.action_runs_ok),
        ("failed", &t.action_runs_failed),
        ("held", &t.action_held),
        ("ineffective", &t.action_ineffective),
    ] {
        m.sample(
            "incidentd_action_runs_total",
            &[("result", result)],
            c.get() as f64,
        );
    }
    m.family(
        "incidentd_notifications_total",
        "counter",
        "Notification deliveries by result (failed: attempts that will be retried).",
    );
    for (result, c) in [
        ("delivered", &t.notifications_delivered),
        ("failed", &t.notifications_failed),
        ("dead_lettered", &t.notifications_dead),
        ("suppressed", &t.notifications_suppressed),
    ] {
        m.sample(
            "incidentd_notifications_total",
            &[("result", result)],
            c.get() as f64,
        );
    }
    m.family(
        "incidentd_notification_outbox",
        "gauge",
        "Notification jobs waiting in the outbox (timed reminders included).",
    );
    m.sample(
        "incidentd_notification_outbox",
        &[],
        t.notifications_queued.get() as f64,
    );
    let peers: Vec<_> = t
        .peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !peers.is_empty() {
        m.family(
            "incidentd_notification_peer_deliveries_total",
            "counter",
            "Deliveries to each peer of a channel with several (Alertmanager `urls`), by result.",
        );
        for ((channel, peer), s) in &peers {
            for (result, n) in [
                ("delivered", s.delivered),
                ("failed", s.failed_attempts),
                ("dead_lettered", s.dead_lettered),
            ] {
                m.sample(
                    "incidentd_notification_peer_deliveries_total",
                    &[("channel", channel), ("peer", peer), ("result", result)],
                    n as f64,
                );
            }
        }
        m.family(
            "incidentd_notification_peer_queued",
            "gauge",
            "Jobs waiting in the outbox for each peer of a channel with several.",
        );
        for ((channel, peer), s) in &peers {
            m.sample(
                "incidentd_notification_peer_queued",
                &[("channel", channel), ("peer", peer)],
                s.queued as f64,
            );
        }
    }
    let plugins: Vec<_> = t.plugins.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !plugins.is_empty() {
        for (family, help) in [
            (
                "incidentd_plugin_events_total",
                "Events offered to a detector plugin, by result.",
            ),
            (
                "incidentd_plugin_messages_total",
                "What a plugin sent, by type (malformed: refused).",
            ),
            ("incidentd_plugin_restarts_total", "Plugin restarts."),
        ] {
            m.family(family, "counter", help);
            for p in &plugins {
                let name = p.name.as_str();
                let samples: Vec<(&str, &str, u64)> = match family {
                    "incidentd_plugin_events_total" => vec![
                        ("result", "sent", p.events_sent.get()),
                        ("result", "dropped", p.events_dropped.get()),
                    ],
                    "incidentd_plugin_messages_total" => vec![
                        ("type", "detection", p.detections.get()),
                        ("type", "event", p.events_emitted.get()),
                        ("type", "malformed", p.malformed.get()),
                    ],
                    _ => vec![("", "", p.restarts.get())],
                };
                for (k, v, n) in samples {
                    if k.is_empty() {
                        m.sample(family, &[("plugin", name)], n as f64);
                    } else {
                        m.sample(family, &[("plugin", name), (k, v)], n as f64);
                    }
                }
            }
        }
        m.family(
            "incidentd_plugin_up",
            "gauge",
            "1 while the plugin runs (after its hello).",
        );
        for p in &plugins {
            let up = *p.state.lock().unwrap_or_else(|e| e.into_inner()) == "running";
            m.sample(
                "incidentd_plugin_up",
                &[("plugin", p.name.as_str())],
                if up { 1.0 } else { 0.0 },
            );
        }
    }
    if let Ok(counts) = st.store.count_by_status() {
        m.family("incidentd_incidents", "gauge", "Incidents by status.");
        for (status, n) in counts {
            m.sample(
                "incidentd_incidents",
                &[("status", status.as_str())],
                n as f64,
            );
        }
    }
    m.family(
        "incidentd_checkpoints_total",
        "counter",
        "Engine checkpoints made durable.",
    );
    m.sample(
        "incidentd_checkpoints_total",
        &[],
        t.checkpoints.get() as f64,
    );
    m.family(
        "incidentd_store_errors_total",
        "counter",
        "Store operations that failed.",
    );
    m.sample(
        "incidentd_store_errors_total",
        &[],
        t.store_errors.get() as f64,
    );
    m.out
}

pub async fn handler(
    axum::extract::State(st): axum::extract::State<Arc<ApiState>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&st).await,
    )
}

/// Serves `/metrics` alone on `addr` until `cancel`.
pub async fn serve_tcp(
    (addr, limits): (SocketAddr, super::Limits),
    st: Arc<ApiState>,
    cancel: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %addr, error = %e, "cannot listen for /metrics; metrics stay on the control socket");
            return;
        }
    };
    tracing::info!(address = %addr, "serving /metrics");
    let roles = st.roles.clone();
    let app = Router::new()
        .route("/metrics", get(handler))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "only /metrics here\n") })
        .with_state(st);
    super::serve_tcp(listener, (&limits, roles), app, cancel, "metrics").await;
}
