//! User names and groups looked up off a listener's accept loop.

use std::time::Duration;

use super::{Identity, Peer};

/// Connections of non-admins whose user is being looked up at once, at most; beyond it a
/// connection is closed at once.
const MAX_IDENTIFYING: usize = 32;

/// User names and groups looked up off the accept loop (the user database may block on a
/// network directory), a bounded number at a time and for at most 5 s each (then the peer
/// is known by its uid alone), so a slow directory never holds up root or the daemon's own
/// user, whose uid is enough. Each connection comes back on `done` with its peer.
pub struct Lookups<S> {
    done: tokio::sync::mpsc::Receiver<(Peer, S)>,
    tx: tokio::sync::mpsc::Sender<(Peer, S)>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    busy: crate::telemetry::Throttle,
    what: &'static str,
}

impl<S: Send + 'static> Lookups<S> {
    pub fn new(what: &'static str) -> Lookups<S> {
        let (tx, done) = tokio::sync::mpsc::channel(MAX_IDENTIFYING);
        Lookups {
            done,
            tx,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IDENTIFYING)),
            busy: crate::telemetry::Throttle::new(Duration::from_secs(10)),
            what,
        }
    }

    /// `stream` and its peer when `who` is known; else its lookup is started (the stream
    /// comes back from [`Lookups::next`]), or, when too many are being looked up, the stream
    /// is closed at once.
    pub fn known(&self, who: Identity, stream: S) -> Option<(Peer, S)> {
        match who {
            Identity::Known(peer) => Some((peer, stream)),
            Identity::Lookup(uid, gid, pid) => {
                self.start((uid, gid, pid), stream);
                None
            }
        }
    }

    fn start(&self, (uid, gid, pid): (u32, Option<u32>, Option<i32>), stream: S) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if let Some(suppressed) = self.busy.allow() {
                tracing::warn!(
                    listener = self.what,
                    uid,
                    suppressed,
                    "connection closed: too many users being looked up at once"
                );
            }
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let lookup = tokio::task::spawn_blocking(move || Peer::of_uid(uid, gid, pid));
            let peer = match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(peer)) => peer,
                _ => Peer::uid_only(uid),
            };
            let _ = tx.send((peer, stream)).await;
            drop(slot);
        });
    }

    /// The next connection whose peer is known (cancel-safe, for `select!`).
    pub async fn next(&mut self) -> Option<(Peer, S)> {
        self.done.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known peer passes at once; a uid to look up comes back from `next` with its peer
    /// (here `nobody`'s, from the user database), and its stream with it.
    #[tokio::test]
    async fn peers_to_look_up_come_back_with_their_stream() {
        let mut lookups = Lookups::new("test");
        let root = Peer::identity(0, Some(0), None);
        let (peer, stream) = lookups
            .known(root, "root's")
            .expect("root is known at once");
        assert_eq!(
            (peer.uid, peer.user.as_str(), stream),
            (Some(0), "root", "root's")
        );
        let nobody = 65534;
        let who = Peer::identity(nobody, None, None);
        assert!(
            matches!(who, Identity::Lookup(65534, None, None)),
            "{who:?}"
        );
        assert!(lookups.known(who, "nobody's").is_none());
        let (peer, stream) = tokio::time::timeout(Duration::from_secs(10), lookups.next())
            .await
            .expect("looked up")
            .expect("a peer");
        assert_eq!(stream, "nobody's");
        assert_eq!(peer.uid, Some(nobody));
        let named = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(nobody))
            .ok()
            .flatten()
            .map_or(format!("uid:{nobody}"), |u| u.name);
        assert_eq!(peer.user, named);
    }
}
