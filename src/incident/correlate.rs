//! The service dependency graph (`[[service]] depends_on`): which services are linked, and
//! which of an incident's services is the most upstream (its root cause).

use std::collections::{BTreeMap, BTreeSet};

use super::port::{IncidentLog, ListQuery, StoreError};
use crate::clock::Timestamp;
use crate::incident::config::ServiceConfig;
use crate::incident::model::Incident;

/// What correlation needs to know of an active incident.
#[derive(Clone, Debug)]
pub struct ActiveView {
    /// The last detection, else the creation.
    pub recent: Timestamp,
    pub rules: Vec<String>,
    /// An external alert's incident (never correlated into).
    pub alert: bool,
    /// The incident's services (its `services`, else its `service`).
    pub services: Vec<String>,
    pub correlation_ids: Vec<String>,
}

impl ActiveView {
    fn of(i: &Incident) -> ActiveView {
        ActiveView {
            recent: i.last_detection_at.unwrap_or(i.created_at),
            rules: i.rules.clone(),
            alert: i.key.starts_with("alert/"),
            services: if i.services.is_empty() {
                i.service.iter().cloned().collect()
            } else {
                i.services.clone()
            },
            correlation_ids: i.correlation_ids.clone(),
        }
    }
}

/// The active incidents as correlation sees them, kept in step with the store's change log,
/// and looked up by service and by correlation/trace id: a detection without an incident of
/// its own looks only at the incidents it could join, instead of reading every active
/// incident from the store (which made each new incident cost time in proportion to the
/// incidents already open). Every change to an incident writes a timeline entry with a
/// change number; the incidents those entries name are read again. The whole index is read
/// again once a minute anyway, so nothing can keep it wrong for long.
#[derive(Debug, Default)]
pub struct ActiveIndex {
    /// The change number it reflects.
    at: u64,
    built: Option<std::time::Instant>,
    incidents: BTreeMap<u64, ActiveView>,
    by_service: BTreeMap<String, BTreeSet<u64>>,
    by_id: BTreeMap<String, BTreeSet<u64>>,
    /// (service, rule) → how many incidents of that service hold that rule: when all of a
    /// service's incidents hold a detection's rule (many addresses of one brute force, say),
    /// none can take it as "same service" and none need be looked at.
    rule_counts: BTreeMap<String, BTreeMap<String, usize>>,
}

impl ActiveIndex {
    const REBUILD: std::time::Duration = std::time::Duration::from_secs(60);

    /// Brings the index up to the store's latest change.
    pub fn refresh(&mut self, store: &dyn IncidentLog) -> Result<(), StoreError> {
        let last = store.last_change();
        if self.built.is_none_or(|b| b.elapsed() >= Self::REBUILD) {
            let query = ListQuery {
                status: crate::incident::model::Status::ACTIVE.to_vec(),
                ..Default::default()
            };
            let mut fresh = ActiveIndex {
                at: last,
                built: Some(std::time::Instant::now()),
                ..Default::default()
            };
            store.scan(&query, &mut |i| {
                fresh.put(i.id, Some(ActiveView::of(&i)));
                true
            })?;
            *self = fresh;
            return Ok(());
        }
        while self.at < last {
            let changed = store.changed_after(self.at, 1000)?;
            let Some(newest) = changed.iter().map(|(c, _)| *c).max() else {
                break;
            };
            let ids: BTreeSet<u64> = changed.iter().map(|(_, id)| *id).collect();
            for id in ids {
                let view = store
                    .incident(id)?
                    .filter(|i| i.status.is_active())
                    .map(|i| ActiveView::of(&i));
                self.put(id, view);
            }
            self.at = newest;
        }
        self.at = self.at.max(last);
        Ok(())
    }

    /// Replaces (or with `None` removes) what is known of incident `id`.
    fn put(&mut self, id: u64, view: Option<ActiveView>) {
        if let Some(old) = self.incidents.remove(&id) {
            for (map, keys) in [
                (&mut self.by_service, &old.services),
                (&mut self.by_id, &old.correlation_ids),
            ] {
                for k in keys {
                    if let Some(set) = map.get_mut(k) {
                        set.remove(&id);
                        if set.is_empty() {
                            map.remove(k);
                        }
                    }
                }
            }
            for s in &old.services {
                if let Some(rules) = self.rule_counts.get_mut(s) {
                    for r in &old.rules {
                        if let Some(n) = rules.get_mut(r) {
                            *n -= 1;
                            if *n == 0 {
                                rules.remove(r);
                            }
                        }
                    }
                    if rules.is_empty() {
                        self.rule_counts.remove(s);
                    }
                }
            }
        }
        if let Some(v) = view {
            for s in &v.services {
                self.by_service.entry(s.clone()).or_default().insert(id);
            }
            for c in &v.correlation_ids {
                self.by_id.entry(c.clone()).or_default().insert(id);
            }
            for s in &v.services {
                let rules = self.rule_counts.entry(s.clone()).or_default();
                for r in &v.rules {
                    *rules.entry(r.clone()).or_default() += 1;
                }
            }
            self.incidents.insert(id, v);
        }
    }

    pub fn get(&self, id: u64) -> Option<&ActiveView> {
        self.incidents.get(&id)
    }

    /// Whether some incident of service `s` does not hold rule `rule`.
    pub fn service_has_other_rule(&self, s: &str, rule: &str) -> bool {
        let all = self.by_service.get(s).map_or(0, BTreeSet::len);
        let with = self
            .rule_counts
            .get(s)
            .and_then(|rules| rules.get(rule))
            .copied()
            .unwrap_or(0);
        all > with
    }

    /// Incidents with service `s`, newest first.
    pub fn with_service(&self, s: &str) -> impl Iterator<Item = u64> + '_ {
        self.by_service
            .get(s)
            .into_iter()
            .flat_map(|ids| ids.iter().rev().copied())
    }

    /// Incidents that carry correlation or trace id `v`, newest first.
    pub fn with_id(&self, v: &str) -> impl Iterator<Item = u64> + '_ {
        self.by_id
            .get(v)
            .into_iter()
            .flat_map(|ids| ids.iter().rev().copied())
    }

    /// Every service some active incident is on.
    pub fn services(&self) -> impl Iterator<Item = &String> {
        self.by_service.keys()
    }
}

/// Services and their direct upstreams (what each depends on).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    upstreams: BTreeMap<String, Vec<String>>,
}

impl Graph {
    pub fn new(services: &[ServiceConfig]) -> Graph {
        Graph {
            upstreams: services
                .iter()
                .map(|s| (s.name.clone(), s.depends_on.clone()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The dependency path from `from` down to `to` (`from` depends on … on `to`), if any.
    pub fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![vec![from.to_owned()]];
        while let Some(path) = stack.pop() {
            let Some(last) = path.last() else { continue };
            for up in self.upstreams.get(last).into_iter().flatten() {
                let mut next = path.clone();
                next.push(up.clone());
                if up == to {
                    return Some(next);
                }
                if seen.insert(up.clone()) {
                    stack.push(next);
                }
            }
        }
        None
    }

    /// Why `a` and `b` are linked ("api depends on db", "web depends on db through api"), if
    /// one depends on the other, directly or through others.
    pub fn link(&self, a: &str, b: &str) -> Option<String> {
        self.path(a, b)
            .or_else(|| self.path(b, a))
            .map(|p| describe(&p))
    }

    /// The most upstream of `services`: the one the most others of them depend on, which
    /// itself depends on none of them; with why. `None` when no two of them are linked.
    pub fn root_of(&self, services: &[String]) -> Option<(String, String)> {
        let mut best: Option<(usize, &String, Vec<String>)> = None;
        for s in services {
            if services.iter().any(|o| o != s && self.path(s, o).is_some()) {
                continue; // depends on another one: not the most upstream
            }
            let dependents: Vec<Vec<String>> = services
                .iter()
                .filter(|o| *o != s)
                .filter_map(|o| self.path(o, s))
                .collect();
            if dependents.is_empty() {
                continue;
            }
            if best.as_ref().is_none_or(|(n, _, _)| dependents.len() > *n) {
                let why: Vec<String> = dependents.iter().map(|p| describe(p)).collect();
                best = Some((dependents.len(), s, why));
            }
        }
        best.map(|(_, s, why)| {
            (
                s.clone(),
                format!(
                    "{s} is the most upstream service involved: {}",
                    why.join("; ")
                ),
            )
        })
    }
}

fn describe(path: &[String]) -> String {
    match path {
        [a, b] => format!("{a} depends on {b}"),
        [a, middle @ .., b] => format!("{a} depends on {b} through {}", middle.join(", ")),
        _ => String::new(),
    }
}

/// A dependency cycle among `services`, as the names along it (first repeated at the end).
pub fn find_cycle(services: &[ServiceConfig]) -> Option<Vec<String>> {
    let graph = Graph::new(services);
    for s in services {
        for up in &s.depends_on {
            if up == &s.name {
                continue; // reported on its own
            }
            if let Some(mut back) = graph.path(up, &s.name) {
                back.insert(0, s.name.clone());
                return Some(back);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(services: &[&str], rules: &[&str], ids: &[&str]) -> ActiveView {
        ActiveView {
            recent: Timestamp(0),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            alert: false,
            services: services.iter().map(|s| s.to_string()).collect(),
            correlation_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_active_index_finds_by_service_and_id_and_forgets_what_changed() {
        let mut ix = ActiveIndex::default();
        ix.put(1, Some(view(&["sshd"], &["ssh"], &[])));
        ix.put(2, Some(view(&["sshd"], &["ssh"], &["t-1"])));
        ix.put(3, Some(view(&["api"], &["errors"], &["t-1"])));
        assert_eq!(ix.with_service("sshd").collect::<Vec<_>>(), [2, 1]);
        assert_eq!(ix.with_id("t-1").collect::<Vec<_>>(), [3, 2]);
        // Every sshd incident holds `ssh`: none can take another ssh group.
        assert!(!ix.service_has_other_rule("sshd", "ssh"));
        assert!(ix.service_has_other_rule("sshd", "sudo"));
        // Incident 2 joins another service and rule, then 1 is resolved (removed).
        ix.put(2, Some(view(&["sshd", "api"], &["ssh", "errors"], &[])));
        ix.put(1, None);
        assert_eq!(ix.with_service("api").collect::<Vec<_>>(), [3, 2]);
        assert_eq!(ix.with_service("sshd").collect::<Vec<_>>(), [2]);
        assert_eq!(ix.with_id("t-1").collect::<Vec<_>>(), [3]);
        assert!(!ix.service_has_other_rule("api", "errors"));
        assert!(ix.service_has_other_rule("api", "ssh"));
        ix.put(2, None);
        ix.put(3, None);
        assert!(ix.services().next().is_none());
        assert!(ix.rule_counts.is_empty() && ix.by_id.is_empty());
    }

    fn svc(name: &str, deps: &[&str]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            owner: None,
        }
    }

    #[test]
    fn links_roots_and_cycles() {
        let g = Graph::new(&[
            svc("web", &["api"]),
            svc("api", &["db", "cache"]),
            svc("db", &[]),
            svc("cache", &[]),
            svc("mail", &[]),
        ]);
        assert_eq!(g.link("api", "db").unwrap(), "api depends on db");
        assert_eq!(
            g.link("db", "web").unwrap(),
            "web depends on db through api"
        );
        assert!(g.link("mail", "db").is_none());
        assert!(g.link("db", "cache").is_none(), "siblings are not linked");
        let (root, why) = g
            .root_of(&["web".into(), "db".into(), "api".into()])
            .unwrap();
        assert_eq!(root, "db");
        assert!(why.contains("api depends on db"), "{why}");
        assert!(g.root_of(&["mail".into(), "db".into()]).is_none());
        assert!(find_cycle(&[svc("a", &["b"]), svc("b", &["c"]), svc("c", &["a"])]).is_some());
        assert!(find_cycle(&[svc("a", &["b"]), svc("b", &[])]).is_none());
    }
}
