//! Who a local peer is and what it may do: the identity comes from the peer's credentials
//! (SO_PEERCRED), never from anything the client says. Shared by the control API and the
//! ingest socket; a leaf module.
//!
//! - **admin**: root, the daemon's own user, and members of `[control] admin_groups`.
//! - **responder**: members of `[control] responder_groups`.
//! - **reader**: any other peer that can open the socket (its file mode decides who can).
//!
//! Group membership is the peer's primary group plus the groups its user name belongs to
//! (`getgrouplist`), as SO_PEERCRED carries the primary group only.
//!
//! Loopback TCP (the web board, `/metrics`) carries no credentials; the kernel still knows
//! which user opened the client's end ([`tcp_owner`]), so those listeners admit by user too.

mod lookups;
pub mod tcp_owner;

pub use lookups::{Known, Lookups};

use std::sync::{Arc, RwLock};

use serde::Deserialize;

/// The daemon's own user name (looked up once).
fn my_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let uid = nix::unistd::geteuid();
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid:{uid}"))
    })
    .clone()
}

/// Who is behind a connection: known, or a uid (with the gid and pid the kernel told) whose
/// user name and groups are still to be looked up.
#[derive(Debug)]
pub enum Identity {
    Known(Peer),
    Lookup(u32, Option<u32>, Option<i32>),
}

impl Identity {
    /// The uid behind the connection, when the kernel told.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Identity::Known(p) => p.uid,
            Identity::Lookup(uid, ..) => Some(*uid),
        }
    }
}

/// A connected peer, from its socket's credentials.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    pub user: String,
    pub groups: Vec<String>,
}

impl Peer {
    /// Who is behind a connected Unix stream (unknown, a reader, when the kernel does not
    /// say).
    pub fn of(stream: &tokio::net::UnixStream) -> Identity {
        match stream.peer_cred() {
            Ok(cred) => Peer::identity(cred.uid(), Some(cred.gid()), cred.pid()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read peer credentials");
                Identity::Known(Peer::unknown())
            }
        }
    }

    /// The peer of `uid` at once when no user database lookup is needed for it (admins by
    /// uid), else what to look up ([`Lookups`]).
    pub fn identity(uid: u32, gid: Option<u32>, pid: Option<i32>) -> Identity {
        if Peer::needs_lookup(uid) {
            Identity::Lookup(uid, gid, pid)
        } else {
            Identity::Known(Peer::of_uid(uid, gid, pid))
        }
    }

    /// The uid that owns the client's end of a loopback TCP connection, as the kernel tells
    /// ([`tcp_owner`]); `Err` when it does not (a client on another host, say).
    pub fn tcp_owner(stream: &tokio::net::TcpStream) -> Result<u32, tcp_owner::OwnerError> {
        let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => return Err(tcp_owner::OwnerError::NotFound(e)),
        };
        tcp_owner::owner_uid(peer, local)
    }

    /// Whether [`Peer::of_uid`] asks the user database for `uid` (which may block on a
    /// network directory); admins by uid are known without it.
    pub fn needs_lookup(uid: u32) -> bool {
        uid != 0 && uid != nix::unistd::geteuid().as_raw()
    }

    /// A peer known by its uid only (the user database did not answer in time): its
    /// connections are counted as its own, and it has no groups (a reader).
    pub fn uid_only(uid: u32, gid: Option<u32>, pid: Option<i32>) -> Peer {
        Peer {
            uid: Some(uid),
            gid,
            pid,
            user: format!("uid:{uid}"),
            groups: Vec::new(),
        }
    }

    /// A peer whose credentials are not known: one anonymous reader.
    pub fn unknown() -> Peer {
        Peer {
            uid: None,
            gid: None,
            pid: None,
            user: "unknown".into(),
            groups: Vec::new(),
        }
    }

    /// The peer with this uid: its user name and groups from the user database (`gid`, its
    /// primary group, when the kernel told; else the user's).
    pub fn of_uid(uid: u32, gid: Option<u32>, pid: Option<i32>) -> Peer {
        if !Peer::needs_lookup(uid) {
            // Admins by uid: no user database lookup (which may block on a network
            // directory) stands between them and a connection.
            return Peer {
                uid: Some(uid),
                gid,
                pid,
                user: if uid == 0 { "root".into() } else { my_name() },
                groups: Vec::new(),
            };
        }
        // A TCP peer has no gid of its own: the user's primary group stands for it.
        let (user, gid) = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => (u.name, gid.or(Some(u.gid.as_raw()))),
            _ => (format!("uid:{uid}"), gid),
        };
        let groups = group_names((!user.starts_with("uid:")).then_some(user.as_str()), gid);
        Peer {
            uid: Some(uid),
            gid,
            pid,
            user,
            groups,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Responder,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}

/// The groups that make admins and responders; replaced on reload.
#[derive(Clone, Debug, Default)]
pub struct RoleGroups {
    pub admin: Vec<String>,
    pub responder: Vec<String>,
}

pub type SharedRoles = Arc<RwLock<RoleGroups>>;

/// The role of a peer under `groups`.
pub fn role_of(peer: &Peer, groups: &RoleGroups) -> Role {
    let me = nix::unistd::geteuid().as_raw();
    match peer.uid {
        Some(0) => return Role::Admin,
        Some(uid) if uid == me => return Role::Admin,
        None => return Role::Reader,
        _ => {}
    }
    let member = |names: &[String]| peer.groups.iter().any(|g| names.contains(g));
    if member(&groups.admin) {
        Role::Admin
    } else if member(&groups.responder) {
        Role::Responder
    } else {
        Role::Reader
    }
}

/// The names of a user's groups: its primary group and those it is a member of.
pub fn group_names(user: Option<&str>, gid: Option<u32>) -> Vec<String> {
    use nix::unistd::{Gid, Group};
    let mut gids: Vec<Gid> = gid.map(Gid::from_raw).into_iter().collect();
    if let (Some(u), Some(g)) = (user, gid)
        && let Ok(name) = std::ffi::CString::new(u)
        && let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(g))
    {
        gids.extend(list);
    }
    let mut names: Vec<String> = gids
        .into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten().map(|g| g.name))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Caps the connections of one socket so that no user can lock out another, nor anyone an
/// admin: at most `max` connections of non-admins at once, at most `per_user` of any one of
/// them; admins are never turned away (and not counted). Connections over a cap are refused
/// at once rather than queued, so the refusal can say why.
pub struct ConnectionGate {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    per_user: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
    per_user_max: usize,
}

/// Refused connections being answered at once, at most: beyond it a refused connection is
/// closed without an answer, so a flood of them cannot hold the daemon's file descriptors.
pub const MAX_ANSWERED_REFUSALS: usize = 32;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this user already holds {max} connections (the most one user may hold)")]
    PerUser { max: usize },
    #[error("all {max} connections for non-admin users are taken")]
    Full { max: usize },
}

/// An admitted connection's place, given back when it is dropped.
pub struct Admission {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _slot: Option<UserSlot>,
}

struct UserSlot {
    uid: u32,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

impl ConnectionGate {
    pub fn new(max: usize, per_user: usize) -> ConnectionGate {
        ConnectionGate {
            permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            max: max.max(1),
            per_user: Default::default(),
            per_user_max: per_user.max(1),
        }
    }

    /// The most connections one non-admin user may hold.
    pub fn per_user(&self) -> usize {
        self.per_user_max
    }

    /// Admits a connection of `peer`, whose role is `role`.
    pub fn admit(&self, peer: &Peer, role: Role) -> Result<Admission, Refusal> {
        if role == Role::Admin {
            return Ok(Admission {
                _permit: None,
                _slot: None,
            });
        }
        // A peer without credentials counts as one anonymous user.
        let uid = peer.uid.unwrap_or(u32::MAX);
        let slot = {
            let mut m = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(uid).or_insert(0);
            if *n >= self.per_user_max {
                return Err(Refusal::PerUser {
                    max: self.per_user_max,
                });
            }
            *n += 1;
            UserSlot {
                uid,
                counts: self.per_user.clone(),
            }
        };
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(Admission {
                _permit: Some(p),
                _slot: Some(slot),
            }),
            // The slot is given back as it drops here.
            Err(_) => Err(Refusal::Full { max: self.max }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Peer {
        Peer {
            uid: Some(uid),
            gid: Some(uid),
            pid: None,
            user: format!("u{uid}"),
            groups: Vec::new(),
        }
    }

    #[test]
    fn the_gate_caps_users_and_never_admins() {
        let gate = ConnectionGate::new(3, 2);
        let a1 = gate.admit(&peer(1000), Role::Reader).unwrap();
        let _a2 = gate.admit(&peer(1000), Role::Reader).unwrap();
        assert_eq!(
            gate.admit(&peer(1000), Role::Reader).err(),
            Some(Refusal::PerUser { max: 2 })
        );
        let _b1 = gate.admit(&peer(1001), Role::Responder).unwrap();
        assert_eq!(
            gate.admit(&peer(1002), Role::Reader).err(),
            Some(Refusal::Full { max: 3 })
        );
        // Admins whatever the load.
        let admins: Vec<_> = (0..10)
            .map(|_| gate.admit(&peer(0), Role::Admin).unwrap())
            .collect();
        drop(admins);
        // A closed connection frees both its user's slot and its place.
        drop(a1);
        let _a3 = gate.admit(&peer(1000), Role::Reader).unwrap();
        assert!(gate.admit(&peer(1002), Role::Reader).is_err());
    }
}
