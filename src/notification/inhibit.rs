//! Inhibition (`[[inhibit]]`): while an active incident matches a rule's `source`, the
//! notifications of incidents matching its `target` (with the same `equal` values, and
//! downstream of it when asked) are held in the outbox, and let go once no source holds
//! them. Checked when a job is about to be delivered, so a source that opens while a
//! target's notification waits (a group wait, a retry) still holds it.

use std::collections::HashMap;

use super::config::InhibitConfig;
use crate::incident::correlate::Graph;
use crate::incident::matcher::field_value;
use crate::incident::port::{IncidentLog, ListQuery, StoreError};
use crate::incident::{Incident, Status};

/// The inhibit rules with the service graph they need.
#[derive(Debug, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitConfig>,
    graph: Option<Graph>,
}

impl Inhibitor {
    pub fn new(config: &super::NotifyConfig) -> Inhibitor {
        Inhibitor {
            rules: config.inhibits.clone(),
            graph: config
                .inhibits
                .iter()
                .any(|r| r.downstream)
                .then(|| Graph::new(&config.services)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The active incident that holds `target`'s notifications, if one does.
    pub fn source_of(
        &self,
        target: &Incident,
        store: &dyn IncidentLog,
    ) -> Result<Option<Incident>, StoreError> {
        // A rule applies when the incident is its target and not a source of it itself
        // (two incidents matching both would otherwise hold each other).
        let rules: Vec<&InhibitConfig> = self
            .rules
            .iter()
            .filter(|r| r.target.holds(target) && !r.source.holds(target))
            .collect();
        if rules.is_empty() || !target.status.is_active() {
            return Ok(None);
        }
        let query = ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut found = None;
        store.scan(&query, &mut |s| {
            if s.id != target.id
                && rules.iter().any(|r| self.holds(r, &s, target))
                // Two incidents that would hold each other (through different rules): the
                // older one holds the newer, never both.
                && !(s.id > target.id && self.would_hold(target, &s))
            {
                found = Some(s);
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Whether `source` would hold `target` by some rule.
    fn would_hold(&self, source: &Incident, target: &Incident) -> bool {
        self.rules.iter().any(|r| {
            r.target.holds(target) && !r.source.holds(target) && self.holds(r, source, target)
        })
    }

    fn holds(&self, r: &InhibitConfig, source: &Incident, target: &Incident) -> bool {
        r.source.holds(source)
            && r.equal
                .iter()
                .all(|f| field_value(source, f) == field_value(target, f))
            && (!r.downstream || self.downstream(source, target))
    }

    /// Whether one of the target's services depends (directly or through others) on one of
    /// the source's.
    fn downstream(&self, source: &Incident, target: &Incident) -> bool {
        let Some(g) = &self.graph else {
            return false;
        };
        let services = |i: &Incident| -> Vec<String> {
            if i.services.is_empty() {
                i.service.iter().cloned().collect()
            } else {
                i.services.clone()
            }
        };
        let ups = services(source);
        services(target)
            .iter()
            .any(|t| ups.iter().any(|s| s != t && g.path(t, s).is_some()))
    }
}

/// Which source each held incident's timeline last named, so `inhibited` and `released`
/// are written once per change rather than once per channel or retry.
#[derive(Debug, Default)]
pub struct Noted(HashMap<u64, Option<u64>>);

impl Noted {
    /// Whether `incident` being held by `source` is news.
    pub fn held(&mut self, incident: u64, source: u64) -> bool {
        self.0.insert(incident, Some(source)) != Some(Some(source))
    }

    /// Whether `incident` being let go is news.
    pub fn released(&mut self, incident: u64) -> bool {
        self.0.insert(incident, None) != Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::config::ServiceConfig;

    fn incident(id: u64, service: &str, labels: &[(&str, &str)], sev: &str) -> Incident {
        let mut i: Incident = serde_json::from_value(serde_json::json!({
            "id": id, "key": format!("k{id}"), "title": "t", "severity": sev,
            "status": "open", "service": service, "host": "web-1", "detections": 1,
            "first_event_at": "2026-12-04T10:00:00Z", "created_at": "2026-12-04T10:00:00Z",
        }))
        .unwrap();
        for (k, v) in labels {
            i.labels.insert((*k).into(), (*v).into());
        }
        i
    }

    fn rule(text: &str) -> InhibitConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn equal_fields_downstream_and_self_sources() {
        let services: Vec<ServiceConfig> = toml::from_str::<toml::Table>(
            "[[service]]\nname = \"api\"\ndepends_on = [\"db\"]\n[[service]]\nname = \"db\"\n",
        )
        .unwrap()["service"]
            .clone()
            .try_into()
            .unwrap();
        let config = super::super::NotifyConfig {
            inhibits: vec![
                rule(
                    "source = { severity = \"sev1\" }\ntarget = { severity = { ne = \"sev1\" } }\nequal = [\"host\", \"dc\"]",
                ),
                rule(
                    "source = { service = \"db\" }\ntarget = { \"labels.kind\" = \"latency\" }\ndownstream = true",
                ),
            ],
            services,
            ..Default::default()
        };
        let inh = Inhibitor::new(&config);
        let src = incident(1, "db", &[("dc", "fra")], "sev1");
        let same_dc = incident(2, "api", &[("dc", "fra")], "sev3");
        let other_dc = incident(3, "api", &[("dc", "ams")], "sev3");
        let r = &inh.rules[0];
        assert!(inh.holds(r, &src, &same_dc));
        assert!(!inh.holds(r, &src, &other_dc), "dc differs");
        // Missing on both sides is equal.
        let no_dc_src = incident(4, "db", &[], "sev1");
        let no_dc = incident(5, "api", &[], "sev2");
        assert!(inh.holds(r, &no_dc_src, &no_dc));

        let d = &inh.rules[1];
        let api_latency = incident(6, "api", &[("kind", "latency")], "sev3");
        let db_latency = incident(7, "db", &[("kind", "latency")], "sev3");
        assert!(inh.holds(d, &src, &api_latency), "api depends on db");
        assert!(
            !inh.holds(d, &api_latency, &db_latency),
            "db does not depend on api"
        );

        // Two rules that would make two incidents hold each other: the older holds.
        let both = Inhibitor::new(&super::super::NotifyConfig {
            inhibits: vec![
                rule("source = { severity = \"sev1\" }\ntarget = { severity = { ne = \"sev1\" } }"),
                rule("source = { service = \"db\" }\ntarget = { service = { ne = \"db\" } }"),
            ],
            ..Default::default()
        });
        let api_sev1 = incident(10, "api", &[], "sev1");
        let db_sev2 = incident(11, "db", &[], "sev2");
        assert!(both.would_hold(&api_sev1, &db_sev2) && both.would_hold(&db_sev2, &api_sev1));

        let mut n = Noted::default();
        assert!(n.held(2, 1));
        assert!(!n.held(2, 1));
        assert!(n.held(2, 9));
        assert!(n.released(2));
        assert!(!n.released(2));
    }
}
