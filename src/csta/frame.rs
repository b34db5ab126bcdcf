//! The 8-byte CSTA frame header of the link profile (README, "The CSTA link"), as a tokio codec.
//!
//! ```text
//! 00 00 LL LL I I I I <xml…>
//! ```
//! Bytes 0–1 are zero, bytes 2–3 the total frame length (header included, big-endian u16,
//! counted in bytes), bytes 4–7 the invoke ID as four ASCII digits. The codec neither knows nor
//! cares what the XML says: it only cuts the byte stream into frames, so a frame whose XML is
//! broken is still a frame (counted and skipped by the reader), while a broken header makes the
//! stream unusable (the link is reset).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The largest frame the 16-bit length field can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
/// The largest XML body that fits in one frame.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// An invoke ID: 0000–9999 on the wire.
///
/// `0001`–`9998` identify our requests, [`InvokeId::EVENT`] (`9999`) marks unsolicited events,
/// and a request from the switch (such as the `SystemStatus` greeting on `0000`) is answered with
/// the switch's own ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvokeId(u16);

impl InvokeId {
    /// The invoke ID that marks an unsolicited event.
    pub const EVENT: InvokeId = InvokeId(9999);
    /// The invoke ID some switches use for the `SystemStatus` they send on connect.
    pub const ZERO: InvokeId = InvokeId(0);
    /// The first invoke ID we use for our own requests.
    pub const FIRST_REQUEST: u16 = 1;
    /// The last invoke ID we use for our own requests.
    pub const LAST_REQUEST: u16 = 9998;

    /// An invoke ID from its numeric value; `None` above 9999.
    pub fn new(value: u16) -> Option<InvokeId> {
        (value <= 9999).then_some(InvokeId(value))
    }

    /// The numeric value.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The four ASCII digits written on the wire.
    pub fn digits(self) -> [u8; 4] {
        let v = self.0;
        [
            b'0' + (v / 1000) as u8,
            b'0' + (v / 100 % 10) as u8,
            b'0' + (v / 10 % 10) as u8,
            b'0' + (v % 10) as u8,
        ]
    }
}

impl std::fmt::Display for InvokeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// One frame: an invoke ID and the XML document it carries (not yet parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The invoke ID from bytes 4–7.
    pub invoke_id: InvokeId,
    /// The XML document, as bytes (UTF-8 expected, checked by the XML reader).
    pub body: Bytes,
}

impl Frame {
    /// A frame from an invoke ID and a body.
    pub fn new(invoke_id: InvokeId, body: impl Into<Bytes>) -> Frame {
        Frame {
            invoke_id,
            body: body.into(),
        }
    }

    /// The frame as bytes on the wire (header and body).
    pub fn to_bytes(&self) -> Result<Bytes, FrameError> {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        CstaCodec.encode(self.clone(), &mut buf)?;
        Ok(buf.freeze())
    }
}

/// Why a byte stream cannot be cut into frames. Any of these means the stream is out of step
/// and the link must be reset.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Bytes 0–1 of a header were not zero.
    #[error("CSTA frame header does not start with 00 00 (found {0:02x} {1:02x}); the byte stream is out of step")]
    BadMagic(u8, u8),
    /// The length field was smaller than the header itself.
    #[error("CSTA frame length {0} is shorter than the 8-byte header")]
    LengthTooShort(u16),
    /// Bytes 4–7 were not four ASCII digits.
    #[error("CSTA frame invoke ID {0:?} is not four ASCII digits")]
    BadInvokeId([u8; 4]),
    /// A body too large for the 16-bit length field was to be sent.
    #[error(
        "CSTA message of {0} bytes does not fit in one frame (at most {MAX_BODY_LEN} bytes of XML)"
    )]
    TooLong(usize),
    /// The socket failed.
    #[error("I/O error on the CSTA link: {0}")]
    Io(#[from] std::io::Error),
}

/// The tokio codec for CSTA frames. Stateless: a partial frame stays in the read buffer until
/// the rest arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct CstaCodec;

impl Decoder for CstaCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            // Check what we already have, so that garbage is reported without waiting.
            if src.len() >= 2 && (src[0] != 0 || src[1] != 0) {
                return Err(FrameError::BadMagic(src[0], src[1]));
            }
            return Ok(None);
        }
        if src[0] != 0 || src[1] != 0 {
            return Err(FrameError::BadMagic(src[0], src[1]));
        }
        let len = u16::from_be_bytes([src[2], src[3]]);
        if (len as usize) < HEADER_LEN {
            return Err(FrameError::LengthTooShort(len));
        }
        let digits = [src[4], src[5], src[6], src[7]];
        let mut value: u16 = 0;
        for d in digits {
            if !d.is_ascii_digit() {
                return Err(FrameError::BadInvokeId(digits));
            }
            value = value * 10 + u16::from(d - b'0');
        }
        let len = len as usize;
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            invoke_id: InvokeId(value),
            body: frame.freeze(),
        }))
    }
}

impl Encoder<Frame> for CstaCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        if item.body.len() > MAX_BODY_LEN {
            return Err(FrameError::TooLong(item.body.len()));
        }
        let len = (item.body.len() + HEADER_LEN) as u16;
        dst.reserve(HEADER_LEN + item.body.len());
        dst.put_u16(0);
        dst.put_u16(len);
        dst.put_slice(&item.invoke_id.digits());
        dst.put_slice(&item.body);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn invoke_digits() {
        assert_eq!(&InvokeId::new(42).unwrap().digits(), b"0042");
        assert_eq!(&InvokeId::EVENT.digits(), b"9999");
        assert!(InvokeId::new(10_000).is_none());
    }

    #[test]
    fn short_garbage_is_reported_early() {
        let mut buf = BytesMut::from(&b"<x"[..]);
        assert!(matches!(
            CstaCodec.decode(&mut buf),
            Err(FrameError::BadMagic(b'<', b'x'))
        ));
    }
}
