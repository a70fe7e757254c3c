//! The status machine: `open → acknowledged → mitigated → resolved → closed`, forward skips
//! allowed; `cancelled` from anything but closed; `reopen` takes resolved back to open.
//! Everything else is refused with a reason a person can act on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Status;

/// A requested status change; the same word is the API path and the CLI verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Ack,
    Mitigate,
    Resolve,
    Close,
    Cancel,
    Reopen,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Ack => "ack",
            Transition::Mitigate => "mitigate",
            Transition::Resolve => "resolve",
            Transition::Close => "close",
            Transition::Cancel => "cancel",
            Transition::Reopen => "reopen",
        }
    }

    /// The status the transition leads to.
    pub fn target(self) -> Status {
        match self {
            Transition::Ack => Status::Acknowledged,
            Transition::Mitigate => Status::Mitigated,
            Transition::Resolve => Status::Resolved,
            Transition::Close => Status::Closed,
            Transition::Cancel => Status::Cancelled,
            Transition::Reopen => Status::Open,
        }
    }

    /// Checks the move from `from`; the error explains why it is refused, worded to follow
    /// "incident 42 " ("is resolved; reopen it first").
    pub fn check(self, from: Status) -> Result<Status, String> {
        use Status::*;
        let to = self.target();
        let ok = match self {
            Transition::Cancel => !matches!(from, Closed | Cancelled),
            Transition::Reopen => from == Resolved,
            // Forward moves along the main line, skips allowed.
            _ => from < to && !matches!(from, Closed | Cancelled),
        };
        if ok {
            return Ok(to);
        }
        Err(match (self, from) {
            (Transition::Reopen, Closed) => "is closed; closed incidents cannot be reopened".into(),
            (Transition::Reopen, f) => format!("is {f}; only a resolved incident can be reopened"),
            (_, f) if f == to => format!("is already {f}"),
            (_, Cancelled) => "is cancelled; it cannot change any more".into(),
            (_, Closed) => "is closed; it cannot change any more".into(),
            (t, Resolved) => format!(
                "is resolved; reopen it first (cannot {} a resolved incident)",
                t.as_str()
            ),
            (t, f) => format!(
                "is {f}; cannot {} it (the status only moves forward)",
                t.as_str()
            ),
        })
    }
}

impl FromStr for Transition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ack" => Transition::Ack,
            "mitigate" => Transition::Mitigate,
            "resolve" => Transition::Resolve,
            "close" => Transition::Close,
            "cancel" => Transition::Cancel,
            "reopen" => Transition::Reopen,
            other => return Err(format!("unknown transition `{other}`")),
        })
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;
    use Transition::*;

    #[test]
    fn the_whole_machine() {
        let all = [Open, Acknowledged, Mitigated, Resolved, Closed, Cancelled];
        let allowed: &[(Transition, Status)] = &[
            (Ack, Open),
            (Mitigate, Open),
            (Mitigate, Acknowledged),
            (Resolve, Open),
            (Resolve, Acknowledged),
            (Resolve, Mitigated),
            (Close, Open),
            (Close, Acknowledged),
            (Close, Mitigated),
            (Close, Resolved),
            (Cancel, Open),
            (Cancel, Acknowledged),
            (Cancel, Mitigated),
            (Cancel, Resolved),
            (Reopen, Resolved),
        ];
        for t in [Ack, Mitigate, Resolve, Close, Cancel, Reopen] {
            for from in all {
                let expect = allowed.contains(&(t, from));
                assert_eq!(t.check(from).is_ok(), expect, "{t} from {from}");
            }
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert_eq!(
            Ack.check(Acknowledged).unwrap_err(),
            "is already acknowledged"
        );
        assert!(Ack.check(Resolved).unwrap_err().contains("reopen it first"));
        assert!(
            Reopen
                .check(Open)
                .unwrap_err()
                .contains("only a resolved incident")
        );
        assert!(Resolve.check(Closed).unwrap_err().contains("closed"));
    }
}
