//! `kind = "match"`: fires on every matching event.

use super::Fire;
use crate::clock::Timestamp;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MatchDetector;

impl MatchDetector {
    pub fn on_event(&mut self, ts: Timestamp) -> Option<Fire> {
        Some(Fire {
            count: 1,
            first_ts: ts,
        })
    }
}

use super::{GroupValues, Marks};

impl super::Kind for MatchDetector {
    fn on_event(
        &mut self,
        _: &str,
        _: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        if !marks.matched {
            return None;
        }
        MatchDetector::on_event(self, ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_every_time() {
        let mut d = MatchDetector;
        for t in 0..3 {
            assert_eq!(
                d.on_event(Timestamp(t)),
                Some(Fire {
                    count: 1,
                    first_ts: Timestamp(t)
                })
            );
        }
    }
}
