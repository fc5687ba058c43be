//! Who may call a service on a unix socket, from the kernel's word about the peer
//! (`SO_PEERCRED`: its pid, uid and gid when it connected), never from anything it sends.
//!
//! A [`PeerPolicy`] admits uid 0, the uids it lists (`--allow-uid`), and, with a socket group,
//! peers whose gid is that group or whose user the group database lists as a member of it
//! (membership read once, when the policy is made: a restart picks up changes). Anyone else
//! gets PERMISSION_DENIED on every call, and the server logs the refused peer's pid and uid.
//! The socket's mode (0600, 0660 with the group) already keeps others from connecting; this
//! check is what still holds when the file's mode was widened, a descriptor was passed on, or
//! a process has `CAP_DAC_OVERRIDE` without being root.

use std::collections::BTreeSet;

use nix::unistd::{Gid, Group, User};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// Who may call.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    uids: BTreeSet<u32>,
    group: Option<Gid>,
    members: BTreeSet<u32>,
}

/// A peer as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The process id (when the kernel gave one).
    pub pid: Option<i32>,
    /// The user id.
    pub uid: u32,
    /// The (primary) group id.
    pub gid: u32,
}

impl PeerPolicy {
    /// Root, the uids in `allow`, and, with `group`, that group's members.
    #[must_use]
    pub fn new(allow: impl IntoIterator<Item = u32>, group: Option<Gid>) -> PeerPolicy {
        let mut members = BTreeSet::new();
        if let Some(gid) = group
            && let Ok(Some(g)) = Group::from_gid(gid)
        {
            for name in &g.mem {
                if let Ok(Some(u)) = User::from_name(name) {
                    members.insert(u.uid.as_raw());
                }
            }
        }
        PeerPolicy {
            uids: allow.into_iter().collect(),
            group,
            members,
        }
    }

    /// Whether `peer` may call.
    #[must_use]
    pub fn admits(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || self.uids.contains(&peer.uid)
            || self
                .group
                .is_some_and(|g| g.as_raw() == peer.gid || self.members.contains(&peer.uid))
    }

    /// The peer of a call on a unix socket (`None` on any other transport).
    #[must_use]
    pub fn peer_of<T>(request: &Request<T>) -> Option<Peer> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)?;
        Some(Peer {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    /// Checks a call: its peer must be admitted.
    ///
    /// # Errors
    /// PERMISSION_DENIED for a peer not admitted or without credentials (logged with its pid
    /// and uid).
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match Self::peer_of(request) {
            Some(peer) if self.admits(&peer) => Ok(()),
            Some(peer) => {
                tracing::warn!(
                    pid = peer.pid.unwrap_or(0),
                    uid = peer.uid,
                    gid = peer.gid,
                    "refused a call from a peer that is not allowed (root, --allow-uid, or the socket group)"
                );
                Err(Status::permission_denied(format!(
                    "uid {} may not call this service (allowed: root, --allow-uid, members of --socket-group)",
                    peer.uid
                )))
            }
            None => {
                tracing::warn!("refused a call without peer credentials");
                Err(Status::permission_denied(
                    "no peer credentials: this service is served on a unix socket only",
                ))
            }
        }
    }

    /// The policy as a tonic interceptor (`Server::add_service(XServer::with_interceptor(..))`).
    pub fn interceptor(
        self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        move |request: Request<()>| {
            self.check(&request)?;
            Ok(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            pid: Some(1),
            uid,
            gid,
        }
    }

    #[test]
    fn root_listed_uids_and_the_group_are_admitted_no_one_else() {
        let p = PeerPolicy::new([1000], Some(Gid::from_raw(4242)));
        assert!(p.admits(&peer(0, 0)));
        assert!(p.admits(&peer(1000, 1000)));
        assert!(p.admits(&peer(65534, 4242)));
        assert!(!p.admits(&peer(65534, 65534)));
        let strict = PeerPolicy::new([], None);
        assert!(strict.admits(&peer(0, 5)));
        assert!(!strict.admits(&peer(1000, 0)), "gid 0 alone is not root");
    }

    #[test]
    fn a_call_without_credentials_is_refused() {
        let p = PeerPolicy::new([], None);
        let e = p.check(&Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
}
