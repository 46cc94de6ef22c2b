//! Stream kinds, the stream header and the frame length prefix: the pure parts of the data
//! streams, kept apart from the I/O so they are tested without sockets.
//!
//! Each established connection carries at most one unidirectional stream per [`StreamKind`]
//! and direction. A stream starts with a 4-byte header (`"vmq"` and the kind's tag) and then
//! carries frames, each a `u32` big-endian length followed by that many payload bytes. The
//! payload is opaque here: the layers above put postcard-encoded versioned enums in it.

use std::fmt;

use thiserror::Error;

/// Bytes of the stream header.
pub const STREAM_HEADER_LEN: usize = 4;
/// The header's first three bytes.
const STREAM_MAGIC: [u8; 3] = *b"vmq";
/// Bytes of a frame's length prefix.
pub const FRAME_PREFIX_LEN: usize = 4;
/// Default largest frame payload accepted and sent (16 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// The purpose of a stream. One ordered stream per peer, kind and direction, so a large
/// metadata sync never delays forwarded publishes (head-of-line blocking stays per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// Replica messages (swc or plumtree) and membership gossip.
    Metadata,
    /// Forwarded publishes, in order per publisher.
    Publish,
    /// Requests and responses with ids: registration, remote enqueue, queue drain, probes,
    /// admin fan-out.
    Rpc,
    /// The transport's own frames: heartbeats and acknowledgements of the `Publish` log.
    /// Never handed to the layers above; kept off the data streams so that neither waits
    /// behind a long batch of publishes.
    Control,
}

impl StreamKind {
    /// Every kind, in tag order.
    pub const ALL: [StreamKind; 4] = [StreamKind::Metadata, StreamKind::Publish, StreamKind::Rpc, StreamKind::Control];

    /// The tag byte in the stream header.
    pub fn tag(self) -> u8 {
        match self {
            StreamKind::Metadata => 0,
            StreamKind::Publish => 1,
            StreamKind::Rpc => 2,
            StreamKind::Control => 3,
        }
    }

    /// The kind of a tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        StreamKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        usize::from(self.tag())
    }

    /// The stream header announcing this kind.
    pub fn header(self) -> [u8; STREAM_HEADER_LEN] {
        [STREAM_MAGIC[0], STREAM_MAGIC[1], STREAM_MAGIC[2], self.tag()]
    }

    /// The kind a received stream header announces.
    pub fn parse_header(header: [u8; STREAM_HEADER_LEN]) -> Result<Self, FrameError> {
        if header[..3] != STREAM_MAGIC {
            return Err(FrameError::BadStreamHeader(header));
        }
        StreamKind::from_tag(header[3]).ok_or(FrameError::BadStreamHeader(header))
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamKind::Metadata => "metadata",
            StreamKind::Publish => "publish",
            StreamKind::Rpc => "rpc",
            StreamKind::Control => "control",
        })
    }
}

/// A data stream that breaks the framing rules; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The stream does not start with `"vmq"` and a known kind tag.
    #[error("malformed stream header {0:02x?}")]
    BadStreamHeader([u8; STREAM_HEADER_LEN]),
    /// A second stream of a kind already open on this connection.
    #[error("second {0} stream on one connection")]
    DuplicateStream(StreamKind),
    /// A frame longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// The payload length a frame prefix announces, refused if above `max` before anything is
/// buffered (as rumqtt's `check()` rejects oversized packets at the fixed header).
pub fn parse_frame_len(prefix: [u8; FRAME_PREFIX_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// The length prefix for a payload of `len` bytes; `None` above `u32::MAX`.
pub fn frame_prefix(len: usize) -> Option<[u8; FRAME_PREFIX_LEN]> {
    u32::try_from(len).ok().map(u32::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_headers_round_trip_and_are_pinned() {
        assert_eq!(StreamKind::Metadata.header(), [b'v', b'm', b'q', 0]);
        assert_eq!(StreamKind::Publish.header(), [b'v', b'm', b'q', 1]);
        assert_eq!(StreamKind::Rpc.header(), [b'v', b'm', b'q', 2]);
        assert_eq!(StreamKind::Control.header(), [b'v', b'm', b'q', 3]);
        for kind in StreamKind::ALL {
            assert_eq!(StreamKind::parse_header(kind.header()), Ok(kind));
        }
    }

    #[test]
    fn malformed_stream_headers_are_refused() {
        for header in [*b"vmq\x04", *b"VMQ\x00", *b"GET "] {
            assert_eq!(StreamKind::parse_header(header), Err(FrameError::BadStreamHeader(header)));
        }
    }

    #[test]
    fn frame_length_above_maximum_is_refused_at_the_prefix() {
        assert_eq!(parse_frame_len([0, 0, 1, 0], 256), Ok(256));
        assert_eq!(parse_frame_len([0, 0, 1, 1], 256), Err(FrameError::TooLarge { len: 257, max: 256 }));
        assert_eq!(frame_prefix(258), Some([0, 0, 1, 2]));
    }
}
