//! The CSTA Phase III XML codec (ECMA-323 over TCP; README, "The CSTA link").
//!
//! Three layers, each usable alone:
//! - [`frame`]: the 8-byte header that cuts a TCP byte stream into frames ([`CstaCodec`]);
//! - [`xml`]: a tolerant reader (local names only, depth-limited) and a strict compact writer;
//! - [`call`]: the call events (part of [`message`]);
//! - [`device`]: device identifiers in a switch's form, mapped to and from the DN plan;
//! - [`message`]: the messages the product uses, as a Rust enum ([`Message`]), written in a
//!   switch's [`Dialect`] and read whatever the dialect.
//!
//! The router and the simulator both use this module; golden tests under `tests/` pin it to
//! bytes written by hand from the specification, so the two cannot share one misreading.

pub mod call;
pub mod device;
pub mod dialect;
pub mod frame;
pub mod message;
pub mod xml;

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
