//! Conditions on an incident, shared by routes, silences and inhibitions: `where` tables
//! whose keys name an incident field (`severity`, `status`, `service`, `host`, `rule`,
//! `title`, `key`, `assignee`, `tag`, `labels.NAME`) and whose values are the conditions
//! rules use (`crate::condition`): `"labels.team" = { regex = "^db" }`, `service = { not_in
//! = ["test"] }`, `"labels.ip" = { cidr = "10.0.0.0/8" }`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Incident;
use crate::condition::Condition;

/// The fields a condition may name.
pub const FIELDS: &str =
    "severity, status, service, host, rule, title, key, assignee, tag, labels.NAME";

/// Conditions on incident fields; every one must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentWhere(pub BTreeMap<String, Condition>);

impl IncidentWhere {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first field that is not an incident field, with the list of those that are.
    pub fn check(&self) -> Result<(), String> {
        for field in self.0.keys() {
            if !known(field) {
                return Err(format!(
                    "unknown incident field `{field}`; use one of {FIELDS}"
                ));
            }
        }
        Ok(())
    }

    pub fn holds(&self, i: &Incident) -> bool {
        self.0.iter().all(|(field, c)| field_holds(field, c, i))
    }
}

fn known(field: &str) -> bool {
    matches!(
        field,
        "severity" | "status" | "service" | "host" | "rule" | "title" | "key" | "assignee" | "tag"
    ) || field.strip_prefix("labels.").is_some_and(|l| !l.is_empty())
}

/// Whether `cond` holds for `field` of `i`. Rules and tags have several values: see
/// [`Condition::holds_for_all_of`].
pub fn field_holds(field: &str, cond: &Condition, i: &Incident) -> bool {
    let one = |v: Option<&str>| cond.holds(v, || v.and_then(|t| t.trim().parse::<f64>().ok()));
    match field {
        "severity" => one(Some(i.severity.as_str())),
        "status" => one(Some(i.status.as_str())),
        "service" => one(i.service.as_deref()),
        "host" => one(i.host.as_deref()),
        "title" => one(Some(&i.title)),
        "key" => one(Some(&i.key)),
        "assignee" => one(i.assignee.as_deref()),
        "rule" => cond.holds_for_all_of(i.rules.iter().map(String::as_str)),
        "tag" => cond.holds_for_all_of(i.tags.iter().map(String::as_str)),
        other => match other.strip_prefix("labels.") {
            Some(label) => one(i.labels.get(label).map(String::as_str)),
            // Refused at load; an unknown field matches nothing.
            None => false,
        },
    }
}

/// A field as `equal` (inhibition) and `group_by` (routes) name it: `host`, `service`,
/// `severity`, `status`, `labels.NAME`, or a bare label name.
pub fn field_value<'a>(i: &'a Incident, field: &str) -> Option<&'a str> {
    match field {
        "host" => i.host.as_deref(),
        "service" => i.service.as_deref(),
        "severity" => Some(i.severity.as_str()),
        "status" => Some(i.status.as_str()),
        other => i
            .labels
            .get(other.strip_prefix("labels.").unwrap_or(other))
            .map(String::as_str),
    }
}

/// `labels = { team = "db", env = { ne = "test" } }`: conditions on labels by name.
pub fn labels_hold(labels: &BTreeMap<String, Condition>, i: &Incident) -> bool {
    labels.iter().all(|(k, c)| {
        let v = i.labels.get(k).map(String::as_str);
        c.holds(v, || v.and_then(|t| t.trim().parse::<f64>().ok()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        let mut i: Incident = serde_json::from_value(serde_json::json!({
            "id": 1, "key": "ssh/203.0.113.9", "title": "SSH brute force", "severity": "sev2",
            "status": "open", "service": "sshd", "host": "web-1", "rules": ["ssh-brute-force"],
            "detections": 1, "first_event_at": "2026-12-04T10:00:00Z",
            "created_at": "2026-12-04T10:00:00Z",
        }))
        .unwrap();
        i.labels.insert("ip".into(), "203.0.113.9".into());
        i.labels.insert("team".into(), "dbteam".into());
        i
    }

    fn w(toml_text: &str) -> IncidentWhere {
        toml::from_str::<BTreeMap<String, IncidentWhere>>(&format!("w = {toml_text}")).unwrap()["w"]
            .clone()
    }

    #[test]
    fn every_operator_on_incident_fields() {
        let i = incident();
        for (text, want) in [
            (r#"{ severity = "sev2" }"#, true),
            (r#"{ severity = { in = ["sev1", "sev2"] } }"#, true),
            (r#"{ service = { ne = "sshd" } }"#, false),
            (r#"{ "labels.team" = { regex = "^db" } }"#, true),
            (r#"{ "labels.team" = { not_regex = "^db" } }"#, false),
            (r#"{ "labels.ip" = { cidr = "203.0.113.0/24" } }"#, true),
            (
                r#"{ "labels.ip" = { not_cidr = ["10.0.0.0/8", "2001:db8::/32"] } }"#,
                true,
            ),
            (r#"{ "labels.missing" = { exists = false } }"#, true),
            (r#"{ "labels.missing" = { ne = "x" } }"#, true),
            (r#"{ "labels.missing" = "x" }"#, false),
            (r#"{ title = { contains = "brute" } }"#, true),
            (r#"{ rule = "ssh-brute-force" }"#, true),
            (r#"{ rule = { ne = "ssh-brute-force" } }"#, false),
            (r#"{ rule = { not = { in = ["a", "b"] } } }"#, true),
            (
                r#"{ host = "web-1", status = { not_in = ["resolved", "closed"] } }"#,
                true,
            ),
            (r#"{ tag = { exists = true } }"#, false),
        ] {
            assert_eq!(w(text).holds(&i), want, "{text}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused_with_the_list() {
        let e = w(r#"{ sevrity = "sev1" }"#).check().unwrap_err();
        assert!(e.contains("`sevrity`") && e.contains("labels.NAME"), "{e}");
        assert!(w(r#"{ "labels.x" = "1" }"#).check().is_ok());
    }

    #[test]
    fn conditions_are_written_back_as_read() {
        let text = r#"{ "labels.ip" = { not_cidr = ["10.0.0.0/8"] }, service = "db", rule = { not = { regex = "^x" } } }"#;
        let first = w(text);
        let json = serde_json::to_value(&first).unwrap();
        let again: IncidentWhere = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(first, again);
        assert_eq!(json["service"], "db");
        assert_eq!(json["labels.ip"]["not_cidr"][0], "10.0.0.0/8");
    }
}
