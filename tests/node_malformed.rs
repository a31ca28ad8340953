//! Malformed and oversized frames on the client protocol, sent by a raw QUIC client with a
//! valid certificate: each stream ends with an error (a `Malformed` answer or a reset), also
//! one that stops sending midway, and the node keeps serving, on the same connection and on a
//! new one.

mod common;

use capdial::net::peer::{Lane, StreamHello};
use capdial::node::server::STREAM_DEADLINE;
use capdial::protocol::admin::{AdminAnswer, AdminError, AdminRequest, FromNode, ToNode};
use capdial::protocol::{ClientError, ClientResponse};
use capdial::types::NodeId;
use capdial::wire::{self, FRAME_BYTES_MAX, HEADER_BYTES, VERSION};
use common::{CLIENT_NAME, Cluster, client_endpoint, connect_raw, exchange_raw, request_raw};

fn status_frame() -> Vec<u8> {
    wire::encode(&ToNode::Admin(AdminRequest::Status)).expect("encode a status request")
}

/// The bad streams, by name.
fn bad_streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut wrong_version = status_frame();
    wrong_version[0] = VERSION.wrapping_add(1);
    let mut over_limit = vec![VERSION];
    let claimed = u32::try_from(FRAME_BYTES_MAX + 1).expect("fits in the header");
    over_limit.extend_from_slice(&claimed.to_le_bytes());
    over_limit.extend_from_slice(&[0u8; 64]);
    // A header within the limit, followed by more bytes than any frame may hold.
    let mut flood = vec![VERSION];
    let most = u32::try_from(FRAME_BYTES_MAX).expect("fits in the header");
    flood.extend_from_slice(&most.to_le_bytes());
    flood.resize(HEADER_BYTES + FRAME_BYTES_MAX + 4096, 0);
    let wrong_type = wire::encode(&StreamHello {
        from: NodeId(7),
        lane: Lane::Raft,
    })
    .expect("encode a hello");
    let frame = status_frame();
    let truncated = frame[..frame.len() - 1].to_vec();
    let mut trailing = status_frame();
    trailing.push(0);
    vec![
        ("garbage", vec![0xFF; 32]),
        ("wrong version byte", wrong_version),
        ("length over FRAME_BYTES_MAX", over_limit),
        ("more bytes than a frame holds", flood),
        ("a valid frame of the wrong type", wrong_type),
        ("a truncated frame", truncated),
        ("a frame with trailing bytes", trailing),
        ("an empty stream", Vec::new()),
        ("a header alone", vec![VERSION]),
    ]
}

/// Whether the node's answer to a bad stream is an error: a typed `Malformed` (or
/// `TooLarge`) answer, or a reset stream.
fn ended_with_error(outcome: &Result<Vec<u8>, String>) -> bool {
    let bytes = match outcome {
        Err(reason) => return reason.starts_with("read answer"),
        Ok(bytes) => bytes,
    };
    let refused = |error: &ClientError| {
        matches!(
            error,
            ClientError::Malformed { .. } | ClientError::TooLarge { .. }
        )
    };
    match wire::decode::<FromNode>(bytes) {
        Ok((FromNode::Admin(Err(AdminError::Request(error))), _)) => refused(&error),
        Ok((FromNode::Data(ClientResponse { result: Err(error) }), _)) => refused(&error),
        _ => false,
    }
}

async fn assert_serves(connection: &quinn::Connection, after: &str) {
    let answer = request_raw(connection, &ToNode::Admin(AdminRequest::Status)).await;
    assert!(
        matches!(answer, Ok(FromNode::Admin(Ok(AdminAnswer::Status(_))))),
        "the node serves a status request after {after}: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_end_their_stream_and_the_node_keeps_serving() {
    let cluster = Cluster::start(1).await;
    let endpoint = client_endpoint(&cluster.certs, CLIENT_NAME);
    let address = cluster.node(1).address;
    let connection = connect_raw(&endpoint, address).await.expect("connect");
    assert_serves(&connection, "connecting").await;
    for (name, bytes) in bad_streams() {
        let outcome = exchange_raw(&connection, &bytes).await;
        let shown: Result<usize, &String> = outcome.as_ref().map(Vec::len);
        assert!(
            ended_with_error(&outcome),
            "{name}: the stream must end with an error, got {shown:?} {:?}",
            outcome
                .as_ref()
                .ok()
                .map(|b| wire::decode::<FromNode>(b).map(|m| m.0))
        );
        assert_serves(&connection, name).await;
    }
    let fresh = connect_raw(&endpoint, address)
        .await
        .expect("a new connection after the bad streams");
    assert_serves(&fresh, "every bad stream, on a new connection").await;
}

/// A stream that sends part of a request and then nothing holds its buffer and its task only
/// until `STREAM_DEADLINE`: then it ends with an error, and the node serves on.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_stops_midway_is_cut_at_its_deadline() {
    let cluster = Cluster::start(1).await;
    let endpoint = client_endpoint(&cluster.certs, CLIENT_NAME);
    let address = cluster.node(1).address;
    let connection = connect_raw(&endpoint, address).await.expect("connect");
    let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
    let frame = status_frame();
    send.write_all(&frame[..frame.len() - 1])
        .await
        .expect("send all but the last byte");
    let answer = recv.read_to_end(HEADER_BYTES + FRAME_BYTES_MAX);
    let outcome = tokio::time::timeout(STREAM_DEADLINE * 3, answer)
        .await
        .expect("the node ends the stream")
        .map_err(|error| format!("read answer: {error}"));
    assert!(ended_with_error(&outcome), "{outcome:?}");
    drop(send);
    assert_serves(&connection, "a stream that stopped midway").await;
}
