//! The incidents the manager wrote last, as values. Under a dense attack each batch joins
//! the same few hundred incidents again; reading each back meant a store read and a JSON
//! decode per incident per batch, a seventh of the manager's thread. The manager is the only
//! writer, so an incident it wrote and has not touched since is exactly what the store holds.
//!
//! An incident is handed out once ([`Recent::take`]): whatever the manager does with it next
//! (write it, refuse a command, find it closed) it is no longer here, so a later read goes to
//! the store unless the next batch puts it back. Every other write forgets its incident, and
//! a store that reopens after a failed flush empties it (see `Manager::heal`).
//!
//! Bounded: at most [`CAPACITY`] incidents; one more evicts another.

use std::collections::HashMap;

use super::Incident;

/// The most incidents kept.
pub(super) const CAPACITY: usize = 2048;

#[derive(Default)]
pub(super) struct Recent {
    incidents: HashMap<u64, Incident>,
}

impl Recent {
    /// The incident as last written, if it is here; it leaves.
    pub(super) fn take(&mut self, id: u64) -> Option<Incident> {
        self.incidents.remove(&id)
    }

    /// Keeps `inc`, just written, in place of what was kept of it.
    pub(super) fn keep(&mut self, inc: Incident) {
        if self.incidents.len() >= CAPACITY
            && !self.incidents.contains_key(&inc.id)
            && let Some(any) = self.incidents.keys().next().copied()
        {
            self.incidents.remove(&any);
        }
        self.incidents.insert(inc.id, inc);
    }

    /// Drops what is kept of incident `id` (another write changed it).
    pub(super) fn forget(&mut self, id: u64) {
        self.incidents.remove(&id);
    }

    pub(super) fn clear(&mut self) {
        self.incidents.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.incidents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::incident::Severity;

    fn inc(id: u64, title: &str) -> Incident {
        Incident::new(
            id,
            format!("k{id}"),
            title.into(),
            Severity::Sev3,
            Timestamp::from_millis(0),
        )
    }

    #[test]
    fn an_incident_is_handed_out_once_and_a_newer_write_replaces_it() {
        let mut r = Recent::default();
        r.keep(inc(1, "first"));
        r.keep(inc(1, "second"));
        assert_eq!(r.take(1).map(|i| i.title), Some("second".into()));
        assert!(r.take(1).is_none(), "handed out twice");
        r.keep(inc(2, "x"));
        r.forget(2);
        assert!(r.take(2).is_none(), "forgotten, still handed out");
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let mut r = Recent::default();
        for id in 0..(CAPACITY as u64 + 100) {
            r.keep(inc(id, "t"));
        }
        assert_eq!(r.len(), CAPACITY);
        // The newest is always kept.
        assert!(r.take(CAPACITY as u64 + 99).is_some());
        r.keep(inc(5, "again"));
        assert!(r.len() <= CAPACITY);
    }
}
