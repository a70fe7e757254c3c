//! The service dependency graph (`[[service]] depends_on`): which services are linked, and
//! which of an incident's services is the most upstream (its root cause).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ServiceConfig;

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

    fn svc(name: &str, deps: &[&str]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
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
