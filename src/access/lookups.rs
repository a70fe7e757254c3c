//! User names and groups looked up off a listener's accept loop.

use std::time::Duration;

use super::{Identity, Peer};

/// Users being looked up at once, at most (each holds a blocking thread until the user
/// database answers, however long it takes).
const MAX_IDENTIFYING: usize = 32;

/// How long a connection waits for its user's name and groups before it goes on as its uid
/// alone.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// User names and groups looked up off the accept loop (the user database may block on a
/// network directory), so a slow directory never holds up root or the daemon's own user,
/// whose uid is enough. At most [`MAX_IDENTIFYING`] lookups run at once, and at most
/// `per_user` for one uid (so one user's flood cannot take every place); a place is given
/// back only when its lookup has returned, so a directory that hangs holds a bounded number
/// of threads. A connection waits at most 5 s, then goes on as its uid alone (no groups: a
/// reader). Each connection comes back from [`Lookups::next`] with its peer.
pub struct Lookups<S> {
    done: tokio::sync::mpsc::Receiver<(Peer, S)>,
    tx: tokio::sync::mpsc::Sender<(Peer, S)>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    per_uid: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
    per_user: usize,
    slow: std::sync::Arc<crate::telemetry::Throttle>,
    what: &'static str,
    /// The lookup ([`Peer::of_uid`]; the tests' stands in for a directory that hangs).
    lookup: fn(u32, Option<u32>, Option<i32>) -> Peer,
    /// How long a connection waits for it.
    wait: Duration,
}

/// What became of a connection given to [`Lookups::known`].
pub enum Known<S> {
    /// Its peer is known: go on.
    Ready(Peer, S),
    /// Its user is being looked up; it comes back from [`Lookups::next`].
    Started,
    /// Too many lookups are running (`why`): refuse it.
    Busy(S, &'static str),
}

impl<S: Send + 'static> Lookups<S> {
    /// For the listener `what`, one uid having at most `per_user` lookups at once.
    pub fn new(what: &'static str, per_user: usize) -> Lookups<S> {
        let (tx, done) = tokio::sync::mpsc::channel(MAX_IDENTIFYING);
        Lookups {
            done,
            tx,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IDENTIFYING)),
            per_uid: Default::default(),
            per_user: per_user.max(1),
            slow: std::sync::Arc::new(crate::telemetry::Throttle::new(Duration::from_secs(60))),
            what,
            lookup: Peer::of_uid,
            wait: LOOKUP_WAIT,
        }
    }

    /// `stream` with its peer when `who` is known; else its lookup is started, or `stream`
    /// is handed back to be refused when too many lookups run (for its uid, or in all).
    pub fn known(&self, who: Identity, stream: S) -> Known<S> {
        let (uid, gid, pid) = match who {
            Identity::Known(peer) => return Known::Ready(peer, stream),
            Identity::Lookup(uid, gid, pid) => (uid, gid, pid),
        };
        {
            let counts = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
            if counts.get(&uid).copied().unwrap_or(0) >= self.per_user {
                return Known::Busy(
                    stream,
                    "this user's earlier connections are still being identified",
                );
            }
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Known::Busy(stream, "too many users are being identified at once");
        };
        *self
            .per_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uid)
            .or_insert(0) += 1;
        let (counts, of_uid) = (self.per_uid.clone(), self.lookup);
        // The places are given back when the lookup returns, not when the connection stops
        // waiting for it.
        let lookup = tokio::task::spawn_blocking(move || {
            let peer = of_uid(uid, gid, pid);
            let mut m = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&uid);
                }
            }
            drop(slot);
            peer
        });
        let (tx, slow, what, wait) = (self.tx.clone(), self.slow.clone(), self.what, self.wait);
        tokio::spawn(async move {
            let peer = match tokio::time::timeout(wait, lookup).await {
                Ok(Ok(peer)) => peer,
                _ => {
                    if let Some(suppressed) = slow.allow() {
                        tracing::warn!(
                            listener = what,
                            uid,
                            suppressed,
                            "the user database did not name a user within 5 s; its connection goes on as its uid alone, without groups"
                        );
                    }
                    Peer::uid_only(uid, gid, pid)
                }
            };
            // When the listener has stopped, the stream is dropped here.
            let _ = tx.send((peer, stream)).await;
        });
        Known::Started
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
        let mut lookups = Lookups::new("test", 1);
        let root = Peer::identity(0, Some(0), None);
        let Known::Ready(peer, stream) = lookups.known(root, "root's") else {
            panic!("root is known at once");
        };
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
        assert!(matches!(lookups.known(who, "nobody's"), Known::Started));
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

    /// A user database that takes 2 s for every user (one that hangs, as a network directory
    /// can): one uid has at most `per_user` lookups at once and is refused beyond, another
    /// uid still gets its own, at most 32 run at all; a connection stops waiting after its
    /// wait and goes on as its uid alone, and the places come back only once the lookups
    /// have returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_directory_holds_a_bounded_number_of_places() {
        fn slow(uid: u32, gid: Option<u32>, pid: Option<i32>) -> Peer {
            std::thread::sleep(Duration::from_secs(2));
            let mut p = Peer::uid_only(uid, gid, pid);
            p.user = format!("named {uid}");
            p
        }
        let mut lookups = Lookups::new("test", 2);
        lookups.lookup = slow;
        lookups.wait = Duration::from_millis(300);
        let who = |uid| Identity::Lookup(uid, None, None);
        assert!(matches!(lookups.known(who(1000), 1), Known::Started));
        assert!(matches!(lookups.known(who(1000), 2), Known::Started));
        let Known::Busy(3, why) = lookups.known(who(1000), 3) else {
            panic!("a third lookup of one uid at once");
        };
        assert!(why.contains("still being identified"), "{why}");
        // Other uids fill the 32 places in all.
        for uid in 2000..2030 {
            assert!(matches!(
                lookups.known(who(uid), uid as i32),
                Known::Started
            ));
        }
        let Known::Busy(_, why) = lookups.known(who(3000), 0) else {
            panic!("a 33rd lookup at once");
        };
        assert!(why.contains("too many users"), "{why}");
        // Root needs no lookup and is never refused.
        assert!(matches!(
            lookups.known(Peer::identity(0, None, None), 9),
            Known::Ready(..)
        ));
        // After the wait, each connection goes on as its uid alone (no name, no groups).
        let (peer, _) = tokio::time::timeout(Duration::from_secs(1), lookups.next())
            .await
            .expect("back after the wait")
            .expect("a peer");
        assert!(
            peer.user.starts_with("uid:") && peer.groups.is_empty(),
            "{peer:?}"
        );
        // The places are still held by the lookups that hang.
        assert!(matches!(lookups.known(who(1000), 4), Known::Busy(..)));
        // Once they return, they are given back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(matches!(lookups.known(who(1000), 5), Known::Started));
    }
}
