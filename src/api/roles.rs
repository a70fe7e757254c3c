//! Who may do what on the control API (DESIGN §3.5): the role of a connection comes from its
//! peer credentials (SO_PEERCRED), never from anything the client says.
//!
//! - **admin**: root, the daemon's own user, and members of `[control] admin_groups`: every
//!   call (creating incidents by hand, reload, and all below).
//! - **responder**: members of `responder_groups`: status changes, notes, tags, assignment,
//!   events and external alerts. Changing an incident's severity by hand is for admins.
//! - **reader**: any other peer that can open the socket (its file mode decides who can):
//!   every GET.
//!
//! Group membership is the peer's primary group plus the groups its user name belongs to
//! (`getgrouplist`), as SO_PEERCRED carries the primary group only. A refused call is answered
//! 403 with the role it needed and logged.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, Peer};
pub use crate::access::{Role, RoleGroups, SharedRoles, group_names, role_of};

/// The role a call needs.
pub fn needed(method: &Method, path: &str) -> Role {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if method == Method::GET || method == Method::HEAD {
        // Every action's rendered plan: what a dry run shows, to the same role.
        if let ["", "v1", "incidents", _id, "actions"] = parts.as_slice() {
            return Role::Responder;
        }
        return Role::Reader;
    }
    match parts.as_slice() {
        ["", "v1", "events"] | ["", "v1", "alerts"] => Role::Responder,
        // Editing an incident (its title) is a responder's, like its status.
        ["", "v1", "incidents", _id] if method == Method::PATCH => Role::Responder,
        ["", "v1", "incidents", _id, "severity"] => Role::Admin,
        // A merge can raise a severity and a split creates an incident: admins, like both.
        ["", "v1", "incidents", _id, "merge" | "split"] => Role::Admin,
        ["", "v1", "incidents", _id, _action] => Role::Responder,
        // A dry run has no side effect; running, approving and denying are for admins.
        ["", "v1", "incidents", _id, "actions", _a, "dry-run"] => Role::Responder,
        // Creating incidents by hand, reload, and anything new: admins.
        _ => Role::Admin,
    }
}

/// Middleware: answers 403 when the peer's role is below what the call needs.
pub async fn authorize(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let need = needed(req.method(), req.uri().path());
    if need == Role::Reader {
        return next.run(req).await;
    }
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<Peer>>().cloned() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the caller's credentials are unknown",
        )
        .into_response();
    };
    let have = {
        let groups = st.roles.read().unwrap_or_else(|p| p.into_inner());
        role_of(&peer, &groups)
    };
    if have >= need {
        return next.run(req).await;
    }
    tracing::warn!(user = %peer.user, uid = ?peer.uid, method = %req.method(), path = %req.uri().path(),
        needed = need.as_str(), role = have.as_str(), "refused an API call");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "{} {} needs the {} role; {} is a {} (see [control] admin_groups and responder_groups)",
            req.method(),
            req.uri().path(),
            need.as_str(),
            peer.user,
            have.as_str()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, groups: &[&str]) -> Peer {
        Peer {
            uid: Some(uid),
            gid: Some(uid),
            pid: None,
            user: format!("u{uid}"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn roles_and_what_calls_need() {
        let g = RoleGroups {
            admin: vec!["ops".into()],
            responder: vec!["oncall".into()],
        };
        assert_eq!(role_of(&peer(0, &[]), &g), Role::Admin);
        assert_eq!(role_of(&peer(4242, &["ops"]), &g), Role::Admin);
        assert_eq!(role_of(&peer(4242, &["oncall", "x"]), &g), Role::Responder);
        assert_eq!(role_of(&peer(4242, &["x"]), &g), Role::Reader);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(role_of(&peer(me, &[]), &g), Role::Admin);

        assert_eq!(needed(&Method::GET, "/v1/incidents"), Role::Reader);
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/7/ack"),
            Role::Responder
        );
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/7/notes"),
            Role::Responder
        );
        assert_eq!(needed(&Method::POST, "/v1/events"), Role::Responder);
        assert_eq!(needed(&Method::POST, "/v1/alerts"), Role::Responder);
        assert_eq!(needed(&Method::PATCH, "/v1/incidents/3"), Role::Responder);
        assert_eq!(needed(&Method::POST, "/v1/incidents/3/merge"), Role::Admin);
        assert_eq!(needed(&Method::POST, "/v1/incidents/3/split"), Role::Admin);
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/3/stage"),
            Role::Responder
        );
        assert_eq!(
            needed(&Method::PUT, "/v1/incidents/3/postmortem"),
            Role::Responder
        );
        assert_eq!(needed(&Method::POST, "/v1/channels/x/test"), Role::Admin);
        assert_eq!(needed(&Method::DELETE, "/v1/incidents/3"), Role::Admin);
        assert_eq!(
            needed(&Method::GET, "/v1/incidents/4/actions"),
            Role::Responder,
            "every action's plan, like a dry run"
        );
        assert_eq!(needed(&Method::GET, "/v1/incidents/4"), Role::Reader);
        assert_eq!(needed(&Method::POST, "/v1/incidents"), Role::Admin);
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/7/severity"),
            Role::Admin
        );
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/7/tags"),
            Role::Responder
        );
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/7/assign"),
            Role::Responder
        );
        assert_eq!(needed(&Method::POST, "/v1/reload"), Role::Admin);
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/4/actions/restart/dry-run"),
            Role::Responder
        );
        assert_eq!(
            needed(&Method::POST, "/v1/incidents/4/actions/restart/run"),
            Role::Admin
        );
        assert_eq!(needed(&Method::POST, "/v1/actions/9/approve"), Role::Admin);
        assert_eq!(needed(&Method::DELETE, "/v1/anything"), Role::Admin);
    }
}
