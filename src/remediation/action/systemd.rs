//! `kind = "systemd"`: `systemctl OPERATION UNIT` (restart by default), the unit rendered as
//! a unit name (no leading '-', no path).

use std::collections::BTreeMap;

use super::template::{self, Field};
use super::{Action, Plan, Problems};
use crate::remediation::config::Operation;

/// What `operation` may be.
const OPERATIONS: [&str; 6] = [
    "restart",
    "reload",
    "start",
    "stop",
    "try-restart",
    "reload-or-restart",
];

pub struct Systemd {
    unit: String,
    operation: String,
}

impl Systemd {
    pub fn new(op: &Operation) -> Result<Systemd, Problems> {
        let mut out = Problems::new();

        if op.unit.is_none() {
            out.push(("unit", "a systemd action needs `unit`".into()));
        }
        let operation = op.operation.as_deref().unwrap_or("restart");
        if !OPERATIONS.contains(&operation) {
            out.push((
                "operation",
                format!("`{operation}`: expected restart, reload, start, stop, try-restart or reload-or-restart"),
            ));
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(Systemd {
            unit: op.unit.clone().unwrap_or_default(),
            operation: op.operation.clone().unwrap_or_else(|| "restart".into()),
        })
    }
}

impl Action for Systemd {
    fn plan(&self, ctx: &minijinja::Value) -> Result<Plan, String> {
        let unit = template::render(&self.unit, ctx, "unit", Field::Unit)?;
        if unit.is_empty() || unit.starts_with('-') {
            return Err(format!("`{unit}` is not a unit name"));
        }
        Ok(Plan::Exec {
            argv: vec!["systemctl".into(), self.operation.clone(), unit],
            env: BTreeMap::new(),
            cwd: None,
            user: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, op};
    use super::*;

    #[test]
    fn systemctl_on_the_rendered_unit() {
        let s = Systemd::new(&op(
            "kind = \"systemd\"\nunit = \"{{ incident.service }}.service\"",
        ))
        .unwrap();
        let Plan::Exec { argv, .. } = s.plan(&ctx()).unwrap() else {
            panic!()
        };
        assert_eq!(argv, ["systemctl", "restart", "nginx.service"]);
        let Err(p) = Systemd::new(&op(
            "kind = \"systemd\"\nunit = \"x\"\noperation = \"mask\"",
        )) else {
            panic!("mask accepted")
        };
        assert_eq!(p[0].0, "operation");
        assert!(Systemd::new(&op("kind = \"systemd\"")).is_err());
    }
}
