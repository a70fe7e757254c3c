//! Severity, the vocabulary every layer shares: rules give it, incidents carry it, routes,
//! actions and SLAs match on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Incident severity; sev1 is the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    #[serde(rename = "sev1", alias = "critical")]
    Sev1,
    #[serde(rename = "sev2", alias = "high")]
    Sev2,
    #[serde(rename = "sev3", alias = "medium")]
    Sev3,
    #[serde(rename = "sev4", alias = "low")]
    Sev4,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Sev1 => "sev1",
            Severity::Sev2 => "sev2",
            Severity::Sev3 => "sev3",
            Severity::Sev4 => "sev4",
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "sev1" | "critical" => Severity::Sev1,
            "sev2" | "high" => Severity::Sev2,
            "sev3" | "medium" => Severity::Sev3,
            "sev4" | "low" => Severity::Sev4,
            other => {
                return Err(format!(
                    "unknown severity `{other}` (expected sev1..sev4 or critical, high, medium, low)"
                ));
            }
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
