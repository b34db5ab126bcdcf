//! The CSTA Phase III XML codec (ECMA-323 over TCP; README, "The CSTA link").
//!
//! Three layers, each usable alone:
//! - [`frame`]: the 8-byte header that cuts a TCP byte stream into frames ([`CstaCodec`]);
//! - [`xml`]: what the tolerant reader refuses (local names only, depth-limited) and a strict
//!   compact writer into a caller's buffer; the reader itself is one streaming pass that
//!   extracts the fields each message needs, with no tree;
//! - [`call`]: the call events (part of [`message`]);
//! - [`device`]: device identifiers in a switch's form, mapped to and from the DN plan;
//! - [`message`]: the messages the product uses, as a Rust enum ([`Message`]), written in a
//!   switch's [`Dialect`] and read whatever the dialect.
//!
//! The router and the simulator both use this module; golden tests under `tests/` pin it to
//! bytes written by hand from the specification, so the two cannot share one misreading.

pub mod appsession;
pub mod call;
mod decode;
pub mod device;
pub mod dialect;
pub mod frame;
pub mod message;
mod reader;
pub mod xml;

pub use appsession::{AppSession, SessionError, SystemRegister};
pub use device::{DeviceForm, DeviceNaming};
pub use dialect::{AccodeEncoding, Dialect, EscapeRoot, PrivateDataPosition};
pub use frame::{CstaCodec, Frame, FrameError, InvokeId};
pub use message::{
    CallEvent, CallEventKind, Connection, ConnectionChange, CstaError, DecodeError, HotDeskAction,
    HotDeskEvent, HotDeskRequest, HotDeskState, Message,
};

/// Encode a message as a complete frame with the given invoke ID.
pub fn encode_frame(
    invoke_id: InvokeId,
    message: &Message,
    dialect: &Dialect,
) -> Result<Frame, FrameError> {
    let xml = message.encode(dialect);
    if xml.len() > frame::MAX_BODY_LEN {
        return Err(FrameError::TooLong(xml.len()));
    }
    Ok(Frame::new(invoke_id, xml))
}

/// Frames encoded one after another into one reused buffer: a link sends every request
/// through one, so a frame costs no allocation of its own while the buffer has room (each
/// frame's bytes are a slice of the buffer, shared until written).
#[derive(Debug, Default)]
pub struct FrameEncoder {
    buf: bytes::BytesMut,
}

impl FrameEncoder {
    /// Room made at once when the buffer runs low: several frames' worth.
    const CHUNK: usize = 16 * 1024;

    /// Encode a message as a complete frame with the given invoke ID.
    pub fn encode(
        &mut self,
        invoke_id: InvokeId,
        message: &Message,
        dialect: &Dialect,
    ) -> Result<Frame, FrameError> {
        if self.buf.capacity() < Self::CHUNK / 4 {
            self.buf.reserve(Self::CHUNK);
        }
        encode_frame_into(invoke_id, message, dialect, &mut self.buf)?;
        let mut body = self.buf.split();
        bytes::Buf::advance(&mut body, frame::HEADER_LEN);
        Ok(Frame {
            invoke_id,
            body: body.freeze(),
        })
    }
}

/// Append a message as a complete frame (header and XML) to `dst`, typically a connection's
/// write buffer: nothing is allocated when the buffer has room, so a link can send every
/// frame through one reused buffer. On error `dst` is left as it was.
pub fn encode_frame_into(
    invoke_id: InvokeId,
    message: &Message,
    dialect: &Dialect,
    dst: &mut bytes::BytesMut,
) -> Result<(), FrameError> {
    let start = dst.len();
    dst.extend_from_slice(&[0, 0, 0, 0]);
    dst.extend_from_slice(&invoke_id.digits());
    message.encode_into(dialect, dst);
    let len = dst.len() - start;
    if len > frame::MAX_FRAME_LEN {
        dst.truncate(start);
        return Err(FrameError::TooLong(len - frame::HEADER_LEN));
    }
    let len = (len as u16).to_be_bytes();
    dst[start + 2] = len[0];
    dst[start + 3] = len[1];
    Ok(())
}
