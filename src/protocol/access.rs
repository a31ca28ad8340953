//! Who may send what: a certificate's [`Role`] against a request.
//!
//! `readonly` may read data and look at the cluster (keyspaces, members, fault rules,
//! status); `app` may also write data; `admin` may also change the cluster: create and drop
//! keyspaces, add and remove members, set fault rules. A node's certificate may send nothing on
//! the client protocol: nodes talk to each other on the peer protocol only.

use super::admin::{AdminRequest, ToNode};
use super::data::ClientError;
use crate::net::tls::Role;

/// The least role that may send `request`.
pub fn needs(request: &ToNode) -> Role {
    match request {
        ToNode::Data(request) if request.operation.is_write() => Role::App,
        ToNode::Data(_) => Role::Readonly,
        ToNode::Admin(request) => match request {
            AdminRequest::CreateKeyspace { .. }
            | AdminRequest::DropKeyspace { .. }
            | AdminRequest::AddMember { .. }
            | AdminRequest::RemoveMember { .. }
            | AdminRequest::SetFaults(_)
            | AdminRequest::BackupOpen { .. }
            | AdminRequest::BackupRead { .. }
            | AdminRequest::RestoreKeyspace { .. }
            | AdminRequest::RestoreChunk { .. } => Role::Admin,
            AdminRequest::ListKeyspaces
            | AdminRequest::Members
            | AdminRequest::Faults
            | AdminRequest::Status => Role::Readonly,
        },
    }
}

/// What `request` does, as a refusal names it.
pub fn operation(request: &ToNode) -> &'static str {
    match request {
        ToNode::Data(request) => request.operation.name(),
        ToNode::Admin(request) => request.name(),
    }
}

/// `Ok` if `role` may send `request`, else the typed refusal naming both.
pub fn authorize(role: Role, request: &ToNode) -> Result<(), ClientError> {
    let needs = needs(request);
    if role.includes(needs) {
        return Ok(());
    }
    Err(ClientError::PermissionDenied {
        role,
        operation: operation(request).to_string(),
        needs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::faults::FaultRules;
    use crate::protocol::data::{ClientRequest, Operation};
    use crate::strong::ClientId;
    use crate::types::NodeId;
    use bytes::Bytes;

    fn data(operation: Operation) -> ToNode {
        ToNode::Data(ClientRequest::new(ClientId(1), 1, "ks", operation))
    }

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }

    #[test]
    fn each_role_may_do_what_it_is_for_and_no_more() {
        let get = data(Operation::Get { key: key() });
        let put = data(Operation::Put {
            key: key(),
            value: Bytes::new(),
            context: None,
        });
        let add = data(Operation::Add { key: key(), by: 1 });
        let status = ToNode::Admin(AdminRequest::Status);
        let faults = ToNode::Admin(AdminRequest::SetFaults(FaultRules::none()));
        let drop = ToNode::Admin(AdminRequest::DropKeyspace { name: "ks".into() });
        let remove = ToNode::Admin(AdminRequest::RemoveMember { id: NodeId(2) });
        // A backup reads every key of the cluster, a restore writes whole keyspaces: admin.
        let backup = ToNode::Admin(AdminRequest::BackupOpen {
            keyspace: "ks".into(),
        });
        let page = ToNode::Admin(AdminRequest::BackupRead {
            backup: 1,
            cursor: Bytes::new(),
        });
        let restore = ToNode::Admin(AdminRequest::RestoreChunk {
            name: "ks".into(),
            seq: 0,
            data: Bytes::new(),
            last: true,
        });
        let reads = [&get, &status];
        let writes = [&put, &add];
        let changes = [&faults, &drop, &remove, &backup, &page, &restore];
        for request in reads {
            assert!(authorize(Role::Readonly, request).is_ok(), "{request:?}");
        }
        for request in writes.iter().chain(&changes) {
            assert!(authorize(Role::Readonly, request).is_err(), "{request:?}");
        }
        for request in reads.iter().chain(&writes) {
            assert!(authorize(Role::App, request).is_ok(), "{request:?}");
        }
        for request in changes {
            assert!(authorize(Role::App, request).is_err(), "{request:?}");
        }
        for request in reads.iter().chain(&writes).chain(&changes) {
            assert!(authorize(Role::Admin, request).is_ok(), "{request:?}");
            assert!(authorize(Role::Node, request).is_err(), "{request:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_role_the_operation_and_what_it_needs() {
        let drop = ToNode::Admin(AdminRequest::DropKeyspace { name: "ks".into() });
        let refused = authorize(Role::App, &drop).unwrap_err();
        assert_eq!(
            refused,
            ClientError::PermissionDenied {
                role: Role::App,
                operation: "drop keyspace".into(),
                needs: Role::Admin,
            }
        );
        let text = refused.to_string();
        assert!(
            text.contains("app") && text.contains("drop keyspace"),
            "{text}"
        );
        let status = ToNode::Admin(AdminRequest::Status);
        let text = authorize(Role::Node, &status).unwrap_err().to_string();
        assert!(text.contains("node certificate"), "{text}");
    }
}
