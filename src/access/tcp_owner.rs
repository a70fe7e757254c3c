//! The local user behind a loopback TCP connection. TCP carries no peer credentials, but the
//! kernel knows which user opened the client's end of the connection: `sock_diag(7)` answers
//! for exactly one socket, named by its four-tuple, with its owner's uid (what `ss -e` shows).
//! The client's end is the socket whose own address is the peer address the listener saw and
//! whose remote address is the listener's side of the connection.
//!
//! One request and one answer on a netlink socket opened for the lookup; no file under /proc
//! is read, so the cost does not grow with the number of sockets on the host.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

/// Why the owner of a connection is not known.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot ask the kernel (sock_diag netlink socket): {0}")]
    Socket(#[source] std::io::Error),
    #[error("the kernel knows no such connection (it may have closed): {0}")]
    NotFound(#[source] std::io::Error),
    #[error("the kernel's answer could not be read: {0}")]
    Answer(String),
    #[error("the two ends are of different address families ({peer} and {local})")]
    Families { peer: SocketAddr, local: SocketAddr },
    #[error("the client {peer} is not on this host")]
    Remote { peer: SocketAddr },
    #[error("the kernel answered for another socket or one without an owner (state {state})")]
    NotTheClient { state: u8 },
}

/// TCP states whose sockets do not stand for a connecting user: a listener (the kernel's
/// exact lookup falls back to one on the same address and port), and the minimal sockets of
/// half-open and closed connections, which report uid 0.
const NOT_A_CLIENT: [u8; 4] = [
    netlink_packet_sock_diag::constants::TCP_LISTEN,
    netlink_packet_sock_diag::constants::TCP_TIME_WAIT,
    netlink_packet_sock_diag::constants::TCP_SYN_RECV,
    // TCP_NEW_SYN_RECV, not named by the crate.
    12,
];

/// The uid that owns the client's end of the TCP connection from `peer` to `local` (as the
/// accepting side sees them: `peer_addr()` and `local_addr()` of the accepted stream). Only
/// a client on this host has one: its address is loopback or the listener's own. The answer
/// is taken only when it names exactly the socket asked for, in a state a client's end has.
pub fn owner_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, OwnerError> {
    let (peer_ip, local_ip) = match (unmapped(peer.ip()), unmapped(local.ip())) {
        (p @ IpAddr::V4(_), l @ IpAddr::V4(_)) | (p @ IpAddr::V6(_), l @ IpAddr::V6(_)) => (p, l),
        _ => return Err(OwnerError::Families { peer, local }),
    };
    if !peer_ip.is_loopback() && peer_ip != local_ip {
        return Err(OwnerError::Remote { peer });
    }
    let family = if peer_ip.is_ipv4() { AF_INET } else { AF_INET6 };
    let client = SocketId {
        // The client's socket: its own address is the peer, its remote one is ours.
        source_port: peer.port(),
        destination_port: local.port(),
        source_address: peer_ip,
        destination_address: local_ip,
        interface_id: 0,
        // INET_DIAG_NOCOOKIE: look the socket up by its addresses alone.
        cookie: [0xff; 8],
    };
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: client.clone(),
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut out = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut out);

    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(OwnerError::Socket)?;
    socket.bind_auto().map_err(OwnerError::Socket)?;
    // The kernel answers at once; a bound keeps a listener's accept loop from ever waiting
    // on it longer.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )
    .map_err(|e| OwnerError::Socket(e.into()))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(OwnerError::Socket)?;
    socket.send(&out, 0).map_err(OwnerError::Socket)?;
    // One answer: the socket's description (72 bytes and its attributes) or an error.
    let mut answer = vec![0u8; 8192];
    let n = socket
        .recv(&mut &mut answer[..], 0)
        .map_err(OwnerError::Socket)?;
    let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&answer[..n])
        .map_err(|e| OwnerError::Answer(e.to_string()))?;
    match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
            let h = &r.header;
            let same = h.socket_id.source_port == client.source_port
                && h.socket_id.destination_port == client.destination_port
                && h.socket_id.source_address == client.source_address
                && h.socket_id.destination_address == client.destination_address;
            if same && h.inode != 0 && !NOT_A_CLIENT.contains(&h.state) {
                Ok(h.uid)
            } else {
                Err(OwnerError::NotTheClient { state: h.state })
            }
        }
        NetlinkPayload::Error(e) => Err(OwnerError::NotFound(e.to_io())),
        other => Err(OwnerError::Answer(format!(
            "unexpected message {:?}",
            other.message_type()
        ))),
    }
}

/// Whether this process can tell the owners of loopback connections: one lookup of a
/// connection it makes to itself on 127.0.0.1 (or `::1`), which must name its own user.
pub fn check() -> Result<(), OwnerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .or_else(|_| std::net::TcpListener::bind("[::1]:0"))
        .map_err(OwnerError::Socket)?;
    let addr = listener.local_addr().map_err(OwnerError::Socket)?;
    let client = std::net::TcpStream::connect(addr).map_err(OwnerError::Socket)?;
    let (accepted, peer) = listener.accept().map_err(OwnerError::Socket)?;
    let local = accepted.local_addr().map_err(OwnerError::Socket)?;
    let uid = owner_uid(peer, local)?;
    drop(client);
    if uid == nix::unistd::geteuid().as_raw() {
        Ok(())
    } else {
        Err(OwnerError::Answer(format!(
            "the kernel named uid {uid} as the owner of this process's own connection"
        )))
    }
}

/// An IPv4 address a dual-stack listener shows as `::ffff:a.b.c.d`, as the IPv4 address the
/// kernel files the connection under.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel names this process's user as the owner of a connection it opened, on IPv4
    /// and on IPv6 loopback; a listening socket is not taken for a client's end.
    #[test]
    fn the_owner_of_a_loopback_connection_is_its_user() {
        let me = nix::unistd::geteuid().as_raw();
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(bind) else {
                // No IPv6 loopback in this network namespace: IPv4 was checked.
                assert_ne!(bind, "127.0.0.1:0");
                continue;
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            let local = accepted.local_addr().unwrap();
            assert_eq!(owner_uid(peer, local).unwrap(), me, "{bind}");
            // The listener's own port as a client's: the kernel's lookup falls back to the
            // listening socket, which is no client's end and is not taken for one.
            let err = owner_uid(local, local);
            assert!(
                matches!(err, Err(OwnerError::NotTheClient { state: 10 })),
                "{err:?}"
            );
            // Which end is asked for is shown by the boundary tests, where the client is
            // another user.
        }
        check().expect("this process can tell its own connections");
    }

    /// A client on another host has no owner here, and nothing is asked.
    #[test]
    fn remote_clients_are_not_looked_up() {
        let err = owner_uid(
            "192.0.2.7:40000".parse().unwrap(),
            "127.0.0.1:9464".parse().unwrap(),
        );
        assert!(matches!(err, Err(OwnerError::Remote { .. })), "{err:?}");
    }

    #[test]
    fn mapped_addresses_are_looked_up_as_ipv4() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(unmapped(mapped), v4);
        assert_eq!(unmapped(v4), v4);
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
        let err = owner_uid("127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert!(matches!(err, Err(OwnerError::Families { .. })), "{err:?}");
    }
}
