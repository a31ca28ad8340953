//! Every byte that crosses a socket goes through this module, and nothing else encodes by hand.
//!
//! A frame is a 5-byte header followed by a payload:
//!
//! ```text
//! +---------+----------------------+---------------------------------+
//! | version | payload length (u32) | payload: bincode 2, serde types |
//! |  1 byte |  little-endian       | fixed-width little-endian ints  |
//! +---------+----------------------+---------------------------------+
//! ```
//!
//! The length is checked against [`FRAME_BYTES_MAX`] before anything is allocated, and the
//! bincode decoder carries the same limit, so a hostile length inside the payload cannot make
//! it allocate more. Decoding never panics: every failure is a [`DecodeError`].
//!
//! The simulator round-trips every core message through [`roundtrip`], so codec bugs surface in
//! simulation as well as on the network.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The only frame version this build speaks. A peer sending another is refused, not guessed at.
pub const VERSION: u8 = 1;

/// Bytes in a frame header: the version byte and the little-endian `u32` payload length.
pub const HEADER_BYTES: usize = 5;

/// The largest payload a frame may carry. Snapshot chunks and anti-entropy batches are sized
/// well below this by their own `*_max` constants.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<FRAME_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<FRAME_BYTES_MAX>()
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("payload of {bytes} bytes exceeds the frame limit of {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
    #[error("serializing the payload failed")]
    Serialize(#[source] bincode::error::EncodeError),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame needs {needed} bytes, only {available} available")]
    Incomplete { needed: usize, available: usize },
    #[error("frame version {found}, this build speaks version {VERSION}")]
    Version { found: u8 },
    #[error("frame payload of {bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
    #[error("frame payload is malformed")]
    Malformed(#[source] bincode::error::DecodeError),
    #[error("frame payload has {trailing} bytes after the message")]
    TrailingBytes { trailing: usize },
}

/// Encodes `message` as one frame: header and payload.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let mut frame = vec![VERSION, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(message, &mut frame, config())
        .map_err(EncodeError::Serialize)?;
    let bytes = frame.len() - HEADER_BYTES;
    if bytes > FRAME_BYTES_MAX {
        return Err(EncodeError::TooLarge {
            bytes,
            bytes_max: FRAME_BYTES_MAX,
        });
    }
    let length = u32::try_from(bytes).expect("checked against FRAME_BYTES_MAX above");
    frame[1..HEADER_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(frame)
}

/// Reads a frame header and returns the payload length it announces, after checking the
/// version and the size limit. Needs exactly [`HEADER_BYTES`] bytes.
pub fn decode_header(header: &[u8; HEADER_BYTES]) -> Result<usize, DecodeError> {
    if header[0] != VERSION {
        return Err(DecodeError::Version { found: header[0] });
    }
    let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let bytes = usize::try_from(length).unwrap_or(usize::MAX);
    if bytes > FRAME_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            bytes,
            bytes_max: FRAME_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Decodes the first frame in `buffer`. Returns the message and how many bytes it used, so a
/// stream reader can keep what follows.
pub fn decode<T: DeserializeOwned>(buffer: &[u8]) -> Result<(T, usize), DecodeError> {
    let Some(header) = buffer.first_chunk::<HEADER_BYTES>() else {
        return Err(DecodeError::Incomplete {
            needed: HEADER_BYTES,
            available: buffer.len(),
        });
    };
    let bytes = decode_header(header)?;
    let end = HEADER_BYTES + bytes;
    let Some(payload) = buffer.get(HEADER_BYTES..end) else {
        return Err(DecodeError::Incomplete {
            needed: end,
            available: buffer.len(),
        });
    };
    let (message, used) =
        bincode::serde::decode_from_slice(payload, config()).map_err(DecodeError::Malformed)?;
    if used != payload.len() {
        return Err(DecodeError::TrailingBytes {
            trailing: payload.len() - used,
        });
    }
    Ok((message, end))
}

/// The payload encoding without a header or size limit, for local work on data already in
/// memory: hashing, canonical forms, measuring what a frame would carry, re-reading a serde
/// type as another of the same shape, rows on disk. Never send these bytes on their own (only
/// [`encode`] checks [`FRAME_BYTES_MAX`]); a frame's payload is exactly these bytes when it
/// fits. Bytes inside a message a peer sent (a snapshot chunk) are read with
/// [`unframed::decode_bounded`], which carries the frame limit like [`decode`].
pub mod unframed {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    fn config()
    -> bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Fixint> {
        bincode::config::standard()
            .with_little_endian()
            .with_fixed_int_encoding()
    }

    /// Encodes `value` as a bare payload, whatever its size.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, super::EncodeError> {
        bincode::serde::encode_to_vec(value, config()).map_err(super::EncodeError::Serialize)
    }

    /// Decodes bytes from [`encode`] (all of them), whatever their size.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, super::DecodeError> {
        let (value, used) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(super::DecodeError::Malformed)?;
        whole(value, used, bytes)
    }

    /// [`decode`] for bytes a peer sent inside a frame: a hostile length inside them cannot
    /// make the decoder allocate past [`super::FRAME_BYTES_MAX`].
    pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, super::DecodeError> {
        let bounded = config().with_limit::<{ super::FRAME_BYTES_MAX }>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, bounded)
            .map_err(super::DecodeError::Malformed)?;
        whole(value, used, bytes)
    }

    fn whole<T>(value: T, used: usize, bytes: &[u8]) -> Result<T, super::DecodeError> {
        if used != bytes.len() {
            return Err(super::DecodeError::TrailingBytes {
                trailing: bytes.len() - used,
            });
        }
        Ok(value)
    }
}

/// Encodes and decodes `message`, as the network would. The simulator sends every message
/// through this, so a type that does not survive the codec fails in simulation.
///
/// Panics if the message does not round-trip: in the simulator that is a local bug.
pub fn roundtrip<T: Serialize + DeserializeOwned>(message: &T) -> T {
    let frame = encode(message).expect("a core message must encode");
    let (decoded, used) = decode(&frame).expect("an encoded message must decode");
    assert_eq!(used, frame.len(), "a frame must decode to its own length");
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Ping { seq: u64 },
        Data(Vec<u8>),
    }

    #[test]
    fn frames_round_trip_and_report_their_length() {
        let frame = encode(&Sample::Ping { seq: 7 }).unwrap();
        let mut stream = frame.clone();
        stream.extend_from_slice(&[0xAA; 3]);
        let (message, used) = decode::<Sample>(&stream).unwrap();
        assert_eq!(message, Sample::Ping { seq: 7 });
        assert_eq!(used, frame.len());
    }

    // The header layout is part of the protocol: version, then little-endian length.
    #[test]
    fn header_layout_is_stable() {
        let frame = encode(&Sample::Ping { seq: 1 }).unwrap();
        assert_eq!(frame[..HEADER_BYTES], [VERSION, 12, 0, 0, 0]);
        assert_eq!(frame[HEADER_BYTES..], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let frame = encode(&Sample::Data(vec![1, 2, 3])).unwrap();
        assert!(matches!(
            decode::<Sample>(&frame[..3]),
            Err(DecodeError::Incomplete { needed: 5, .. })
        ));
        assert!(matches!(
            decode::<Sample>(&frame[..frame.len() - 1]),
            Err(DecodeError::Incomplete { .. })
        ));
        let mut wrong_version = frame.clone();
        wrong_version[0] = 9;
        assert!(matches!(
            decode::<Sample>(&wrong_version),
            Err(DecodeError::Version { found: 9 })
        ));
        let oversized = [VERSION, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(matches!(
            decode::<Sample>(&oversized),
            Err(DecodeError::TooLarge { .. })
        ));
        let unknown_variant = [VERSION, 4, 0, 0, 0, 9, 0, 0, 0];
        assert!(matches!(
            decode::<Sample>(&unknown_variant),
            Err(DecodeError::Malformed(_))
        ));
    }

    // A payload that claims a huge vector must fail on the limit, not try to allocate it.
    #[test]
    fn hostile_inner_length_does_not_allocate() {
        let mut frame = vec![VERSION, 12, 0, 0, 0, 1, 0, 0, 0];
        frame.extend_from_slice(&u64::MAX.to_le_bytes()[..4]);
        frame[1] = 8;
        assert!(decode::<Sample>(&frame).is_err());
        let mut huge = vec![VERSION, 12, 0, 0, 0, 1, 0, 0, 0];
        huge.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        huge[1] = 12;
        assert!(matches!(
            decode::<Sample>(&huge),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_payload_bytes_are_rejected() {
        let mut frame = encode(&Sample::Ping { seq: 1 }).unwrap();
        frame.push(0);
        frame[1] += 1;
        assert!(matches!(
            decode::<Sample>(&frame),
            Err(DecodeError::TrailingBytes { trailing: 1 })
        ));
    }
}
