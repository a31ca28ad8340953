//! The core's door: a client request reaches the core (or the shell's fault rules) only as an
//! [`Admitted`], which only [`admit`] makes. It checks the caller's role (see
//! `protocol::access`) and makes a data request's session the caller's own.

use crate::net::tls::Caller;
use crate::protocol::access;
use crate::protocol::admin::{AdminError, FromNode, ToNode};
use crate::strong::ClientId;

/// A request its caller may send, its session bound to the caller's certificate.
#[derive(Debug)]
pub struct Admitted(ToNode);

impl Admitted {
    pub fn request(&self) -> &ToNode {
        &self.0
    }

    pub(super) fn into_request(self) -> ToNode {
        self.0
    }
}

/// Lets `request` in if `caller`'s role allows it; else the answer that refuses it.
pub fn admit(caller: &Caller, request: ToNode) -> Result<Admitted, Box<FromNode>> {
    if let Err(refused) = access::authorize(caller.role, &request) {
        return Err(Box::new(match request {
            ToNode::Data(_) => FromNode::data_error(refused),
            ToNode::Admin(_) => FromNode::Admin(Err(AdminError::Request(refused))),
        }));
    }
    Ok(Admitted(match request {
        ToNode::Data(mut data) => {
            data.client = session_of(&caller.name, data.client);
            ToNode::Data(data)
        }
        admin => admin,
    }))
}

/// The id a client's session has in the log: the id it chose, hashed with its certificate's
/// name. Two certificates never share a session however they pick their ids, so one client
/// cannot be answered another's result or make another's retry look old; and the hash is
/// SHA-256, so nobody can choose an id that lands on someone else's.
pub fn session_of(name: &str, chosen: ClientId) -> ClientId {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"capdial session\0");
    context.update(name.as_bytes());
    context.update(b"\0");
    context.update(&chosen.0.to_be_bytes());
    let digest = context.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    ClientId(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::Role;
    use crate::protocol::admin::AdminRequest;
    use crate::protocol::data::{ClientError, ClientRequest, Operation};
    use bytes::Bytes;

    fn caller(name: &str, role: Role) -> Caller {
        Caller {
            name: name.to_string(),
            role,
        }
    }

    fn put(client: ClientId) -> ToNode {
        let operation = Operation::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            context: None,
        };
        ToNode::Data(ClientRequest::new(client, 1, "ks", operation))
    }

    fn session(admitted: &Admitted) -> ClientId {
        match admitted.request() {
            ToNode::Data(request) => request.client,
            ToNode::Admin(_) => panic!("a data request"),
        }
    }

    #[test]
    fn the_same_chosen_id_is_another_session_under_another_certificate() {
        let web = admit(&caller("web", Role::App), put(ClientId(7))).unwrap();
        let batch = admit(&caller("batch", Role::App), put(ClientId(7))).unwrap();
        let web_again = admit(&caller("web", Role::Admin), put(ClientId(7))).unwrap();
        assert_ne!(session(&web), session(&batch));
        assert_eq!(session(&web), session(&web_again));
        assert_ne!(session(&web), ClientId(7));
    }

    #[test]
    fn a_refused_request_is_answered_in_its_own_kind() {
        let refused = admit(&caller("viewer", Role::Readonly), put(ClientId(1))).unwrap_err();
        assert!(matches!(
            *refused,
            FromNode::Data(ref response)
                if matches!(response.result, Err(ClientError::PermissionDenied { .. }))
        ));
        let drop = ToNode::Admin(AdminRequest::DropKeyspace { name: "ks".into() });
        let refused = admit(&caller("web", Role::App), drop).unwrap_err();
        assert!(matches!(
            *refused,
            FromNode::Admin(Err(AdminError::Request(
                ClientError::PermissionDenied { .. }
            )))
        ));
    }
}
