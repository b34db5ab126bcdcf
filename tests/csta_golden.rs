#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Golden tests of the CSTA codec (SPEC section 5).
//!
//! Every document and every frame below is written out by hand from the specification (and, for
//! the exact layout of what we write, from the module doc of `csta::message`): none is produced
//! by our own encoder. The router and the simulator share this codec, so a round trip through it
//! would prove nothing about the wire; these bytes do.

use bytes::BytesMut;
use csta_router::csta::{
    encode_frame, AccodeEncoding, CallEvent, CallEventKind, Connection, ConnectionChange,
    CstaCodec, CstaError, DecodeError, Dialect, EscapeRoot, Frame, FrameError, HotDeskAction,
    HotDeskEvent, HotDeskRequest, HotDeskState, InvokeId, Message, PrivateDataPosition,
};
use tokio_util::codec::{Decoder, Encoder};

const ED2: &str = "http://www.ecma-international.org/standards/ecma-323/csta/ed2";
const ED3: &str = "http://www.ecma-international.org/standards/ecma-323/csta/ed3";
const ED6: &str = "http://www.ecma-international.org/standards/ecma-323/csta/ed6";
const HOTDESK: &str = "urn:csta-router:hotdesk";

/// The default dialect (SPEC section 5 and 6 defaults).
fn ed3() -> Dialect {
    Dialect::default()
}

/// The second dialect: ed6 namespace, `EscapeService`, `extensions/privateData`, hex account
/// codes.
fn ed6() -> Dialect {
    Dialect {
        csta_namespace: ED6.to_owned(),
        hotdesk_namespace: HOTDESK.to_owned(),
        escape_root: EscapeRoot::EscapeService,
        private_data: PrivateDataPosition::Extensions,
        accode_encoding: AccodeEncoding::Hex,
        device: Default::default(),
    }
}

fn decode_with(doc: &str, d: &Dialect) -> Message {
    Message::decode(doc.as_bytes(), d).unwrap_or_else(|e| panic!("{e}\nin\n{doc}"))
}

/// Every document decodes, with both dialects (the reader is tolerant whatever the dialect,
/// except for account codes, which are not in these documents), to `expected`.
fn assert_decodes(docs: &[&str], expected: &Message) {
    for doc in docs {
        assert_eq!(
            &decode_with(doc, &ed3()),
            expected,
            "default dialect, in\n{doc}"
        );
        assert_eq!(
            &decode_with(doc, &ed6()),
            expected,
            "second dialect, in\n{doc}"
        );
    }
}

fn invoke(v: u16) -> InvokeId {
    InvokeId::new(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Dialects

#[test]
fn default_dialect_is_the_spec_default() {
    let d = Dialect::default();
    assert_eq!(
        d.csta_namespace,
        "http://www.ecma-international.org/standards/ecma-323/csta/ed3"
    );
    assert_eq!(d.hotdesk_namespace, "urn:csta-router:hotdesk");
    assert_eq!(d.escape_root, EscapeRoot::Escape);
    assert_eq!(d.private_data, PrivateDataPosition::Root);
    assert_eq!(d.accode_encoding, AccodeEncoding::Text);
}

#[test]
fn account_code_encodings_by_hand() {
    // "Zürich" in UTF-8: 5A C3 BC 72 69 63 68 (ü is two bytes).
    assert_eq!(AccodeEncoding::Hex.encode("Zürich"), "5AC3BC72696368");
    assert_eq!(AccodeEncoding::Hex.encode("1234"), "31323334");
    assert_eq!(
        AccodeEncoding::Hex.decode("5ac3bc72696368").as_deref(),
        Some("Zürich")
    );
    assert_eq!(AccodeEncoding::Text.encode("Zürich"), "Zürich");
    // Hex of bytes that are not UTF-8 is refused.
    assert_eq!(AccodeEncoding::Hex.decode("C3"), None);
}

// ---------------------------------------------------------------------------------------------
// RequestSystemStatus / RequestSystemStatusResponse / SystemStatus / SystemStatusResponse

#[test]
fn request_system_status() {
    let m = Message::RequestSystemStatus;
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<RequestSystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<RequestSystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<RequestSystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <extensions>
    <privateData><private><vendorThing>1</vendorThing></private></privateData>
  </extensions>
</RequestSystemStatus>
"#,
            r#"<csta:RequestSystemStatus xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2"></csta:RequestSystemStatus>"#,
        ],
        &m,
    );
}

#[test]
fn request_system_status_response() {
    let m = Message::RequestSystemStatusResponse {
        status: "normal".into(),
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<systemStatus>normal</systemStatus>"#,
            r#"</RequestSystemStatusResponse>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<systemStatus>normal</systemStatus>"#,
            r#"</RequestSystemStatusResponse>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><systemStatus>normal</systemStatus></RequestSystemStatusResponse>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<RequestSystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
    <systemStatus>
        normal
    </systemStatus>
    <extensions><privateData><private><x:build xmlns:x="urn:vendor">7.1</x:build></private></privateData></extensions>
</RequestSystemStatusResponse>"#,
            r#"<csta:RequestSystemStatusResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6" vendorAttr="1"><csta:systemStatus>normal</csta:systemStatus></csta:RequestSystemStatusResponse>"#,
        ],
        &m,
    );
    // The codec reports every status as written; deciding what is "up" is the link's job.
    for status in ["enabled", "disabled", "initializing", "messagesLost"] {
        let doc = format!(
            r#"<RequestSystemStatusResponse xmlns="{ED2}"><systemStatus>{status}</systemStatus></RequestSystemStatusResponse>"#
        );
        assert_eq!(
            decode_with(&doc, &ed3()),
            Message::RequestSystemStatusResponse {
                status: status.into()
            }
        );
    }
    assert_eq!(
        Message::decode(
            br#"<RequestSystemStatusResponse xmlns="x"><extensions/></RequestSystemStatusResponse>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "RequestSystemStatusResponse",
            missing: "systemStatus"
        })
    );
}

#[test]
fn system_status() {
    let m = Message::SystemStatus {
        status: Some("enabled".into()),
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<SystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<systemStatus>enabled</systemStatus>"#,
            r#"</SystemStatus>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<SystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<systemStatus>enabled</systemStatus>"#,
            r#"</SystemStatus>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><SystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><systemStatus>enabled</systemStatus></SystemStatus>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SystemStatus xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <systemStatus>enabled</systemStatus>
  <monitorCrossRefID>0</monitorCrossRefID>
</SystemStatus>"#,
            r#"<csta:SystemStatus xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:systemStatus>enabled</csta:systemStatus></csta:SystemStatus>"#,
        ],
        &m,
    );
    // Self-closing, without its child (real peers send it): read, with no status.
    assert_eq!(
        Message::decode(br#"<SystemStatus xmlns="x"/>"#, &ed3()),
        Ok(Message::SystemStatus { status: None })
    );
}

#[test]
fn system_status_response() {
    let m = Message::SystemStatusResponse;
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<SystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<SystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><SystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SystemStatusResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <extensions/>
</SystemStatusResponse>"#,
            r#"<csta:SystemStatusResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"></csta:SystemStatusResponse>"#,
        ],
        &m,
    );
}

// ---------------------------------------------------------------------------------------------
// MonitorStart / MonitorStartResponse / MonitorStop / MonitorStopResponse

#[test]
fn monitor_start() {
    let m = Message::MonitorStart {
        device: "5001".into(),
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStart xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorObject><deviceObject>5001</deviceObject></monitorObject>"#,
            r#"</MonitorStart>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStart xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorObject><deviceObject>5001</deviceObject></monitorObject>"#,
            r#"</MonitorStart>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStart xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorObject><deviceObject>5001</deviceObject></monitorObject></MonitorStart>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MonitorStart xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <monitorObject>
    <deviceObject typeOfNumber="dialingNumber">5001</deviceObject>
  </monitorObject>
  <requestedMonitorFilter><call><callCleared>true</callCleared></call></requestedMonitorFilter>
  <monitorType>device</monitorType>
</MonitorStart>"#,
            r#"<csta:MonitorStart xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><csta:monitorObject><csta:deviceObject>5001</csta:deviceObject></csta:monitorObject></csta:MonitorStart>"#,
        ],
        &m,
    );
    assert_eq!(
        Message::decode(
            br#"<MonitorStart xmlns="x"><monitorType>device</monitorType></MonitorStart>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "MonitorStart",
            missing: "monitorObject/deviceObject"
        })
    );
}

#[test]
fn monitor_start_response() {
    let m = Message::MonitorStartResponse {
        cross_ref: "ab12".into(),
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>ab12</monitorCrossRefID>"#,
            r#"</MonitorStartResponse>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>ab12</monitorCrossRefID>"#,
            r#"</MonitorStartResponse>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>ab12</monitorCrossRefID></MonitorStartResponse>"#,
            // The optional children come first here, to show they are skipped whatever the order.
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">
  <actualMonitorFilter>
    <call><callCleared>true</callCleared></call>
  </actualMonitorFilter>
  <actualMonitorMediaClass><voice>true</voice></actualMonitorMediaClass>
  <monitorCrossRefID>ab12</monitorCrossRefID>
  <monitorExistingCalls>false</monitorExistingCalls>
</MonitorStartResponse>"#,
            r#"<csta:MonitorStartResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><csta:monitorCrossRefID>ab12</csta:monitorCrossRefID></csta:MonitorStartResponse>"#,
        ],
        &m,
    );
    assert_eq!(
        Message::decode(
            br#"<MonitorStartResponse xmlns="x"><actualMonitorFilter/></MonitorStartResponse>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "MonitorStartResponse",
            missing: "monitorCrossRefID"
        })
    );
}

#[test]
fn monitor_stop() {
    let m = Message::MonitorStop {
        cross_ref: "ab12".into(),
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>ab12</monitorCrossRefID>"#,
            r#"</MonitorStop>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>ab12</monitorCrossRefID>"#,
            r#"</MonitorStop>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>ab12</monitorCrossRefID></MonitorStop>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
	<monitorCrossRefID>ab12</monitorCrossRefID>
	<extensions/>
</MonitorStop>"#,
            r#"<csta:MonitorStop xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:monitorCrossRefID>ab12</csta:monitorCrossRefID></csta:MonitorStop>"#,
        ],
        &m,
    );
    assert_eq!(
        Message::decode(br#"<MonitorStop xmlns="x"/>"#, &ed3()),
        Err(DecodeError::Missing {
            message: "MonitorStop",
            missing: "monitorCrossRefID"
        })
    );
}

#[test]
fn monitor_stop_response() {
    let m = Message::MonitorStopResponse;
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStopResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStopResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStopResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MonitorStopResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
</MonitorStopResponse>"#,
            r#"<csta:MonitorStopResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2"/>"#,
        ],
        &m,
    );
}

// ---------------------------------------------------------------------------------------------
// Escape / EscapeResponse (hot-desking private services)

/// The example request of SPEC section 5, character for character (no trailing newline).
const SPEC_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
 <privateData><private>
  <guestAssociatedExtension xmlns="urn:csta-router:hotdesk">
   <action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>
  </guestAssociatedExtension>
 </private></privateData>
</Escape>"#;

fn associate_5001_4001() -> Message {
    Message::Escape(HotDeskRequest {
        guest: "5001".into(),
        action: HotDeskAction::Associate {
            host: "4001".into(),
        },
    })
}

#[test]
fn escape_associate() {
    let m = associate_5001_4001();
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedExtension xmlns="urn:csta-router:hotdesk">"#,
            r#"<action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedExtension>"#,
            r#"</private></privateData>"#,
            r#"</Escape>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<EscapeService xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<extensions><privateData><private>"#,
            r#"<guestAssociatedExtension xmlns="urn:csta-router:hotdesk">"#,
            r#"<action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedExtension>"#,
            r#"</private></privateData></extensions>"#,
            r#"</EscapeService>"#,
        )
    );
    assert_decodes(
        &[
            SPEC_EXAMPLE,
            // EscapeService root, extensions position, prefixes everywhere, unknown extras.
            r#"<?xml version="1.0" encoding="UTF-8"?>
<csta:EscapeService xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6" csta:vendor="x">
  <csta:extensions>
    <csta:privateData>
      <csta:private>
        <hd:guestAssociatedExtension xmlns:hd="urn:csta-router:hotdesk" version="2">
          <hd:comment>unknown element, ignored</hd:comment>
          <hd:hostDevice>4001</hd:hostDevice>
          <hd:guestDevice>5001</hd:guestDevice>
          <hd:action>associate</hd:action>
        </hd:guestAssociatedExtension>
      </csta:private>
    </csta:privateData>
  </csta:extensions>
</csta:EscapeService>"#,
            // ed2, Escape root with the payload under extensions; device values wrapped.
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><extensions><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>associate</action><guestDevice><deviceIdentifier>5001</deviceIdentifier></guestDevice><hostDevice><deviceIdentifier>4001</deviceIdentifier></hostDevice></guestAssociatedExtension></private></privateData></extensions></Escape>"#,
            // EscapeService with privateData directly under the root.
            r#"<EscapeService xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedExtension></private></privateData></EscapeService>"#,
        ],
        &m,
    );
}

#[test]
fn escape_cancel() {
    let m = Message::Escape(HotDeskRequest {
        guest: "5001".into(),
        action: HotDeskAction::Cancel,
    });
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedExtension xmlns="urn:csta-router:hotdesk">"#,
            r#"<action>cancel</action><guestDevice>5001</guestDevice>"#,
            r#"</guestAssociatedExtension>"#,
            r#"</private></privateData>"#,
            r#"</Escape>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<EscapeService xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<extensions><privateData><private>"#,
            r#"<guestAssociatedExtension xmlns="urn:csta-router:hotdesk">"#,
            r#"<action>cancel</action><guestDevice>5001</guestDevice>"#,
            r#"</guestAssociatedExtension>"#,
            r#"</private></privateData></extensions>"#,
            r#"</EscapeService>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
 <privateData><private>
  <guestAssociatedExtension xmlns="urn:csta-router:hotdesk">
   <action>cancel</action><guestDevice>5001</guestDevice>
  </guestAssociatedExtension>
 </private></privateData>
</Escape>"#,
            r#"<csta:EscapeService xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:extensions><csta:privateData><csta:private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>cancel</action><guestDevice>5001</guestDevice></guestAssociatedExtension></csta:private></csta:privateData></csta:extensions></csta:EscapeService>"#,
            // A host on a cancel is not needed, and not an error.
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>cancel</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedExtension></private></privateData></Escape>"#,
        ],
        &m,
    );
}

#[test]
fn escape_errors() {
    let d = ed3();
    assert_eq!(
        Message::decode(
            br#"<Escape xmlns="x"><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>swap</action><guestDevice>5001</guestDevice></guestAssociatedExtension></private></privateData></Escape>"#,
            &d
        ),
        Err(DecodeError::Invalid {
            message: "Escape",
            field: "action",
            value: "swap".into()
        })
    );
    assert_eq!(
        Message::decode(
            br#"<Escape xmlns="x"><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>associate</action><guestDevice>5001</guestDevice></guestAssociatedExtension></private></privateData></Escape>"#,
            &d
        ),
        Err(DecodeError::Missing {
            message: "Escape",
            missing: "hostDevice"
        })
    );
    assert_eq!(
        Message::decode(
            br#"<Escape xmlns="x"><privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk"><action>cancel</action></guestAssociatedExtension></private></privateData></Escape>"#,
            &d
        ),
        Err(DecodeError::Missing {
            message: "Escape",
            missing: "guestDevice"
        })
    );
    assert_eq!(
        Message::decode(
            br#"<Escape xmlns="x"><privateData><private><other/></private></privateData></Escape>"#,
            &d
        ),
        Err(DecodeError::Missing {
            message: "Escape",
            missing: "privateData/private/guestAssociatedExtension"
        })
    );
}

#[test]
fn escape_with_another_hotdesk_namespace() {
    let d = Dialect {
        hotdesk_namespace: "urn:example:hd".into(),
        ..Dialect::default()
    };
    assert_eq!(
        associate_5001_4001().encode(&d),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedExtension xmlns="urn:example:hd">"#,
            r#"<action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedExtension>"#,
            r#"</private></privateData>"#,
            r#"</Escape>"#,
        )
    );
}

#[test]
fn escape_response() {
    let m = Message::EscapeResponse;
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<EscapeResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<EscapeServiceResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><EscapeResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?><EscapeServiceResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<csta:EscapeServiceResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <csta:privateData><csta:private><result>ok</result></csta:private></csta:privateData>
</csta:EscapeServiceResponse>"#,
            r#"<EscapeResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"></EscapeResponse>"#,
        ],
        &m,
    );
}

// ---------------------------------------------------------------------------------------------
// PrivateEvent (hot-desking private events)

#[test]
fn private_event_established() {
    let m = Message::PrivateEvent {
        cross_ref: Some("77".into()),
        event: HotDeskEvent {
            state: HotDeskState::Established,
            guest: "5001".into(),
            host: Some("4001".into()),
        },
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>77</monitorCrossRefID>"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedEvent xmlns="urn:csta-router:hotdesk">"#,
            r#"<state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedEvent>"#,
            r#"</private></privateData>"#,
            r#"</PrivateEvent>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>77</monitorCrossRefID>"#,
            r#"<extensions><privateData><private>"#,
            r#"<guestAssociatedEvent xmlns="urn:csta-router:hotdesk">"#,
            r#"<state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedEvent>"#,
            r#"</private></privateData></extensions>"#,
            r#"</PrivateEvent>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?>
<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
 <monitorCrossRefID>77</monitorCrossRefID>
 <privateData><private>
  <guestAssociatedEvent xmlns="urn:csta-router:hotdesk">
   <state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>
  </guestAssociatedEvent>
 </private></privateData>
</PrivateEvent>"#,
            r#"<csta:PrivateEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:monitorCrossRefID>77</csta:monitorCrossRefID><csta:extensions><csta:privateData><csta:private><hd:guestAssociatedEvent xmlns:hd="urn:csta-router:hotdesk"><hd:state>established</hd:state><hd:guestDevice><hd:deviceIdentifier>5001</hd:deviceIdentifier></hd:guestDevice><hd:hostDevice>4001</hd:hostDevice><hd:since>2024-01-01T00:00:00Z</hd:since></hd:guestAssociatedEvent></csta:private></csta:privateData></csta:extensions></csta:PrivateEvent>"#,
            // The cross-reference after the payload: order does not matter.
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><privateData><private><guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedEvent></private></privateData><monitorCrossRefID>77</monitorCrossRefID></PrivateEvent>"#,
        ],
        &m,
    );
}

#[test]
fn private_event_cancelled() {
    let m = Message::PrivateEvent {
        cross_ref: Some("78".into()),
        event: HotDeskEvent {
            state: HotDeskState::Cancelled,
            guest: "5001".into(),
            host: Some("4001".into()),
        },
    };
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>78</monitorCrossRefID>"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedEvent xmlns="urn:csta-router:hotdesk">"#,
            r#"<state>cancelled</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedEvent>"#,
            r#"</private></privateData>"#,
            r#"</PrivateEvent>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>78</monitorCrossRefID>"#,
            r#"<extensions><privateData><private>"#,
            r#"<guestAssociatedEvent xmlns="urn:csta-router:hotdesk">"#,
            r#"<state>cancelled</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedEvent>"#,
            r#"</private></privateData></extensions>"#,
            r#"</PrivateEvent>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>78</monitorCrossRefID><privateData><private><guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>cancelled</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedEvent></private></privateData></PrivateEvent>"#,
            // The US spelling is read too.
            r#"<csta:PrivateEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6">
  <csta:monitorCrossRefID>78</csta:monitorCrossRefID>
  <csta:extensions><csta:privateData><csta:private>
    <guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>canceled</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice></guestAssociatedEvent>
  </csta:private></csta:privateData></csta:extensions>
</csta:PrivateEvent>"#,
        ],
        &m,
    );

    // Without a cross-reference or a host: both are optional, and left out when absent.
    let bare = Message::PrivateEvent {
        cross_ref: None,
        event: HotDeskEvent {
            state: HotDeskState::Cancelled,
            guest: "5001".into(),
            host: None,
        },
    };
    assert_eq!(
        bare.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<privateData><private>"#,
            r#"<guestAssociatedEvent xmlns="urn:csta-router:hotdesk">"#,
            r#"<state>cancelled</state><guestDevice>5001</guestDevice>"#,
            r#"</guestAssociatedEvent>"#,
            r#"</private></privateData>"#,
            r#"</PrivateEvent>"#,
        )
    );
    assert_decodes(
        &[
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><privateData><private><guestAssociatedEvent xmlns="urn:csta-router:hotdesk"><state>cancelled</state><guestDevice>5001</guestDevice></guestAssociatedEvent></private></privateData></PrivateEvent>"#,
        ],
        &bare,
    );
}

#[test]
fn private_event_of_another_feature_or_broken() {
    // Some other vendor feature: not ours, not an error.
    assert_decodes(
        &[
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>1</monitorCrossRefID><privateData><private><callRecording xmlns="urn:vendor"><on>true</on></callRecording></private></privateData></PrivateEvent>"#,
            r#"<PrivateEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        ],
        &Message::Other {
            name: "PrivateEvent".into(),
        },
    );
    assert_eq!(
        Message::decode(
            br#"<PrivateEvent xmlns="x"><privateData><private><guestAssociatedEvent><state>gone</state><guestDevice>5001</guestDevice></guestAssociatedEvent></private></privateData></PrivateEvent>"#,
            &ed3()
        ),
        Err(DecodeError::Invalid {
            message: "PrivateEvent",
            field: "state",
            value: "gone".into()
        })
    );
    assert_eq!(
        Message::decode(
            br#"<PrivateEvent xmlns="x"><privateData><private><guestAssociatedEvent><state>established</state></guestAssociatedEvent></private></privateData></PrivateEvent>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "PrivateEvent",
            missing: "guestDevice"
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Call events

fn kind_cause(kind: CallEventKind) -> String {
    kind.default_cause().to_owned()
}

fn call(kind: CallEventKind, device: Option<&str>, other_device: Option<&str>) -> Message {
    Message::Call(CallEvent {
        kind,
        cross_ref: Some("7".into()),
        connection: Connection::new("C1", "5001"),
        device: device.map(str::to_owned),
        other_device: other_device.map(str::to_owned),
        cause: Some(kind.default_cause().to_owned()),
        changes: vec![],
    })
}

/// Each call event with every part present, and its document in the default dialect, by hand
/// from ECMA-323 (element names, cause values).
fn call_event_goldens() -> Vec<(Message, &'static str)> {
    use CallEventKind::*;
    vec![
        (
            call(ServiceInitiated, Some("5001"), None),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<ServiceInitiatedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<initiatedConnection><callID>C1</callID><deviceID>5001</deviceID></initiatedConnection>"#,
                r#"<initiatingDevice><deviceIdentifier>5001</deviceIdentifier></initiatingDevice>"#,
                r#"<cause>newCall</cause>"#,
                r#"</ServiceInitiatedEvent>"#,
            ),
        ),
        (
            call(Originated, Some("5001"), Some("4001")),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<OriginatedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<originatedConnection><callID>C1</callID><deviceID>5001</deviceID></originatedConnection>"#,
                r#"<callingDevice><deviceIdentifier>5001</deviceIdentifier></callingDevice>"#,
                r#"<calledDevice><deviceIdentifier>4001</deviceIdentifier></calledDevice>"#,
                r#"<cause>newCall</cause>"#,
                r#"</OriginatedEvent>"#,
            ),
        ),
        (
            call(Delivered, Some("5001"), Some("4001")),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<DeliveredEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
                r#"<alertingDevice><deviceIdentifier>5001</deviceIdentifier></alertingDevice>"#,
                r#"<callingDevice><deviceIdentifier>4001</deviceIdentifier></callingDevice>"#,
                r#"<cause>newCall</cause>"#,
                r#"</DeliveredEvent>"#,
            ),
        ),
        (
            call(Established, Some("5001"), Some("4001")),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<EstablishedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<establishedConnection><callID>C1</callID><deviceID>5001</deviceID></establishedConnection>"#,
                r#"<answeringDevice><deviceIdentifier>5001</deviceIdentifier></answeringDevice>"#,
                r#"<callingDevice><deviceIdentifier>4001</deviceIdentifier></callingDevice>"#,
                r#"<cause>newCall</cause>"#,
                r#"</EstablishedEvent>"#,
            ),
        ),
        (
            call(ConnectionCleared, Some("5001"), None),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<ConnectionClearedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<droppedConnection><callID>C1</callID><deviceID>5001</deviceID></droppedConnection>"#,
                r#"<releasingDevice><deviceIdentifier>5001</deviceIdentifier></releasingDevice>"#,
                r#"<cause>normalClearing</cause>"#,
                r#"</ConnectionClearedEvent>"#,
            ),
        ),
        (
            call(CallCleared, None, None),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CallClearedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<clearedCall><callID>C1</callID><deviceID>5001</deviceID></clearedCall>"#,
                r#"<cause>normalClearing</cause>"#,
                r#"</CallClearedEvent>"#,
            ),
        ),
        (
            call(Held, Some("5001"), None),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<HeldEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<heldConnection><callID>C1</callID><deviceID>5001</deviceID></heldConnection>"#,
                r#"<holdingDevice><deviceIdentifier>5001</deviceIdentifier></holdingDevice>"#,
                r#"<cause>normal</cause>"#,
                r#"</HeldEvent>"#,
            ),
        ),
        (
            call(Retrieved, Some("5001"), None),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<RetrievedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<retrievedConnection><callID>C1</callID><deviceID>5001</deviceID></retrievedConnection>"#,
                r#"<retrievingDevice><deviceIdentifier>5001</deviceIdentifier></retrievingDevice>"#,
                r#"<cause>normal</cause>"#,
                r#"</RetrievedEvent>"#,
            ),
        ),
        (
            call(Transferred, Some("5001"), Some("4001")),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                // ECMA-323 spells it with one "r".
                r#"<TransferedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<primaryOldCall><callID>C1</callID><deviceID>5001</deviceID></primaryOldCall>"#,
                r#"<transferringDevice><deviceIdentifier>5001</deviceIdentifier></transferringDevice>"#,
                r#"<transferredToDevice><deviceIdentifier>4001</deviceIdentifier></transferredToDevice>"#,
                r#"<cause>transfer</cause>"#,
                r#"</TransferedEvent>"#,
            ),
        ),
        (
            call(Diverted, Some("5001"), Some("4001")),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<DivertedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
                r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
                r#"<divertingDevice><deviceIdentifier>5001</deviceIdentifier></divertingDevice>"#,
                r#"<newDestination><deviceIdentifier>4001</deviceIdentifier></newDestination>"#,
                r#"<cause>redirected</cause>"#,
                r#"</DivertedEvent>"#,
            ),
        ),
    ]
}

#[test]
fn call_events_encode() {
    let goldens = call_event_goldens();
    // One golden per kind.
    let kinds: Vec<CallEventKind> = goldens
        .iter()
        .map(|(m, _)| match m {
            Message::Call(c) => c.kind,
            other => panic!("not a call event: {other:?}"),
        })
        .collect();
    assert_eq!(kinds, CallEventKind::ALL.to_vec());
    for (m, doc) in &goldens {
        assert_eq!(&m.encode(&ed3()), doc);
        // The second dialect changes only the namespace of call events.
        assert_eq!(m.encode(&ed6()), doc.replace(ED3, ED6));
        // The golden document reads back as the message.
        assert_decodes(&[*doc], m);
    }
}

#[test]
fn call_events_without_optional_parts() {
    // No cross-reference, no call ID, no devices: the connection element stays (empty).
    let m = Message::Call(CallEvent {
        kind: CallEventKind::Delivered,
        cross_ref: None,
        connection: Connection {
            call_id: None,
            device_id: Some("5001".into()),
        },
        device: None,
        other_device: None,
        cause: Some(kind_cause(CallEventKind::Delivered)),
        changes: vec![],
    });
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<DeliveredEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<connection><deviceID>5001</deviceID></connection>"#,
            r#"<cause>newCall</cause>"#,
            r#"</DeliveredEvent>"#,
        )
    );
    let m = Message::Call(CallEvent {
        kind: CallEventKind::CallCleared,
        cross_ref: None,
        connection: Connection::default(),
        device: None,
        other_device: None,
        cause: Some(kind_cause(CallEventKind::CallCleared)),
        changes: vec![],
    });
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<CallClearedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<clearedCall></clearedCall>"#,
            r#"<cause>normalClearing</cause>"#,
            r#"</CallClearedEvent>"#,
        )
    );
    assert_decodes(
        &[
            r#"<CallClearedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><cause>normalClearing</cause></CallClearedEvent>"#,
        ],
        &m,
    );
}

#[test]
fn call_events_decode_tolerantly() {
    use CallEventKind::*;
    // (message, documents as switches send them: pretty-printed, prefixed, other editions,
    // devices bare or wrapped, unknown children and attributes)
    let cases: Vec<(Message, Vec<&str>)> = vec![
        (
            call(ServiceInitiated, Some("5001"), None),
            vec![
                r#"<?xml version="1.0" encoding="UTF-8"?>
<ServiceInitiatedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <monitorCrossRefID>7</monitorCrossRefID>
  <initiatedConnection>
    <callID>C1</callID>
    <deviceID typeOfNumber="dialingNumber">5001</deviceID>
  </initiatedConnection>
  <initiatingDevice>5001</initiatingDevice>
  <localConnectionInfo>initiated</localConnectionInfo>
  <cause>newCall</cause>
</ServiceInitiatedEvent>"#,
            ],
        ),
        (
            call(Originated, Some("5001"), Some("4001")),
            vec![
                r#"<csta:OriginatedEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:monitorCrossRefID>7</csta:monitorCrossRefID><csta:originatedConnection><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:originatedConnection><csta:callingDevice><csta:deviceIdentifier>5001</csta:deviceIdentifier></csta:callingDevice><csta:calledDevice><csta:deviceIdentifier>4001</csta:deviceIdentifier></csta:calledDevice><csta:localConnectionInfo>connected</csta:localConnectionInfo><csta:cause>newCall</csta:cause></csta:OriginatedEvent>"#,
            ],
        ),
        (
            call(Delivered, Some("5001"), Some("4001")),
            vec![
                r#"<?xml version="1.0" encoding="UTF-8"?>
<DeliveredEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <monitorCrossRefID>7</monitorCrossRefID>
  <connection><callID>C1</callID><deviceID>5001</deviceID></connection>
  <alertingDevice><deviceIdentifier>5001</deviceIdentifier></alertingDevice>
  <callingDevice><deviceIdentifier>4001</deviceIdentifier></callingDevice>
  <calledDevice><deviceIdentifier>5001</deviceIdentifier></calledDevice>
  <lastRedirectionDevice><notRequired/></lastRedirectionDevice>
  <localConnectionInfo>alerting</localConnectionInfo>
  <cause>newCall</cause>
</DeliveredEvent>"#,
            ],
        ),
        (
            call(Established, Some("5001"), Some("4001")),
            vec![
                r#"<EstablishedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><monitorCrossRefID>7</monitorCrossRefID><establishedConnection><callID>C1</callID><deviceID>5001</deviceID></establishedConnection><answeringDevice>5001</answeringDevice><callingDevice><deviceIdentifier typeOfNumber="dialingNumber">4001</deviceIdentifier></callingDevice><calledDevice>5001</calledDevice><cause>newCall</cause></EstablishedEvent>"#,
            ],
        ),
        (
            call(ConnectionCleared, Some("5001"), None),
            vec![
                r#"<?xml version="1.0" encoding="UTF-8"?>
<ConnectionClearedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
	<monitorCrossRefID>7</monitorCrossRefID>
	<droppedConnection><callID>C1</callID><deviceID>5001</deviceID></droppedConnection>
	<releasingDevice><deviceIdentifier>5001</deviceIdentifier></releasingDevice>
	<localConnectionInfo>null</localConnectionInfo>
	<cause>normalClearing</cause>
</ConnectionClearedEvent>"#,
            ],
        ),
        (
            call(CallCleared, None, None),
            vec![
                r#"<csta:CallClearedEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed2"><csta:monitorCrossRefID>7</csta:monitorCrossRefID><csta:clearedCall><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:clearedCall><csta:cause>normalClearing</csta:cause></csta:CallClearedEvent>"#,
            ],
        ),
        (
            call(Held, Some("5001"), None),
            vec![
                r#"<HeldEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><heldConnection><callID>C1</callID><deviceID>5001</deviceID></heldConnection><holdingDevice>5001</holdingDevice><localConnectionInfo>hold</localConnectionInfo><cause>normal</cause></HeldEvent>"#,
            ],
        ),
        (
            call(Retrieved, Some("5001"), None),
            vec![
                r#"<RetrievedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><monitorCrossRefID>7</monitorCrossRefID><retrievedConnection><callID>C1</callID><deviceID>5001</deviceID></retrievedConnection><retrievingDevice><deviceIdentifier>5001</deviceIdentifier></retrievingDevice><cause>normal</cause></RetrievedEvent>"#,
            ],
        ),
        (
            call(Transferred, Some("5001"), Some("4001")),
            vec![
                // Some switches correct ECMA's spelling.
                r#"<TransferredEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><monitorCrossRefID>7</monitorCrossRefID><primaryOldCall><callID>C1</callID><deviceID>5001</deviceID></primaryOldCall><transferringDevice>5001</transferringDevice><transferredToDevice>4001</transferredToDevice><cause>transfer</cause></TransferredEvent>"#,
            ],
        ),
        (
            call(Diverted, Some("5001"), Some("4001")),
            vec![
                r#"<?xml version="1.0" encoding="UTF-8"?>
<csta:DivertedEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <csta:monitorCrossRefID>7</csta:monitorCrossRefID>
  <csta:connection><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:connection>
  <csta:divertingDevice><csta:deviceIdentifier>5001</csta:deviceIdentifier></csta:divertingDevice>
  <csta:newDestination><csta:deviceIdentifier>4001</csta:deviceIdentifier></csta:newDestination>
  <csta:lastRedirectionDevice><csta:notKnown/></csta:lastRedirectionDevice>
  <csta:cause>redirected</csta:cause>
</csta:DivertedEvent>"#,
            ],
        ),
    ];
    for (m, docs) in &cases {
        assert_decodes(docs, m);
    }
    // No cause: none read (not the kind's usual one).
    let Message::Call(mut no_cause) = call(Delivered, Some("5001"), Some("4001")) else {
        panic!("not a call event");
    };
    no_cause.cause = None;
    assert_decodes(
        &[
            r#"<DeliveredEvent xmlns="urn:whatever"><monitorCrossRefID>7</monitorCrossRefID><connection><callID>C1</callID><deviceID>5001</deviceID></connection><alertingDevice>5001</alertingDevice><callingDevice>4001</callingDevice></DeliveredEvent>"#,
        ],
        &Message::Call(no_cause),
    );
    // The transferred connections: the item's new connection (no old one given).
    let Message::Call(mut transfer) = call(Transferred, Some("5001"), Some("4001")) else {
        panic!("not a call event");
    };
    transfer.changes = vec![ConnectionChange {
        old: None,
        new: Some(Connection::new("C3", "4001")),
    }];
    assert_decodes(
        &[
            r#"<TransferedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><primaryOldCall><callID>C1</callID><deviceID>5001</deviceID></primaryOldCall><secondaryOldCall><callID>C2</callID><deviceID>5001</deviceID></secondaryOldCall><transferringDevice><deviceIdentifier>5001</deviceIdentifier></transferringDevice><transferredToDevice><deviceIdentifier>4001</deviceIdentifier></transferredToDevice><transferredConnections><connectionListItem><newConnection><callID>C3</callID><deviceID>4001</deviceID></newConnection></connectionListItem></transferredConnections><cause>transfer</cause></TransferedEvent>"#,
        ],
        &Message::Call(transfer.clone()),
    );
    // Written: after the devices, before the cause; newConnection before oldConnection.
    transfer.changes.push(ConnectionChange {
        old: Some(Connection::new("C1", "4002")),
        new: Some(Connection::new("C3", "4002")),
    });
    let doc = concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<TransferedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
        r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
        r#"<primaryOldCall><callID>C1</callID><deviceID>5001</deviceID></primaryOldCall>"#,
        r#"<transferringDevice><deviceIdentifier>5001</deviceIdentifier></transferringDevice>"#,
        r#"<transferredToDevice><deviceIdentifier>4001</deviceIdentifier></transferredToDevice>"#,
        r#"<transferredConnections>"#,
        r#"<connectionListItem><newConnection><callID>C3</callID><deviceID>4001</deviceID></newConnection></connectionListItem>"#,
        r#"<connectionListItem><newConnection><callID>C3</callID><deviceID>4002</deviceID></newConnection><oldConnection><callID>C1</callID><deviceID>4002</deviceID></oldConnection></connectionListItem>"#,
        r#"</transferredConnections>"#,
        r#"<cause>transfer</cause>"#,
        r#"</TransferedEvent>"#,
    );
    let transfer = Message::Call(transfer);
    assert_eq!(transfer.encode(&ed3()), doc);
    assert_decodes(&[doc], &transfer);
    // A device the switch says it does not know is absent, not an empty string.
    assert_decodes(
        &[
            r#"<HeldEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><heldConnection><callID>C1</callID><deviceID>5001</deviceID></heldConnection><holdingDevice><notKnown/></holdingDevice><cause>normal</cause></HeldEvent>"#,
        ],
        &call(Held, None, None),
    );
}

// ---------------------------------------------------------------------------------------------
// CallInformationEvent / AssociateData / AssociateDataResponse (account codes)

fn call_information(code: &str) -> Message {
    Message::CallInformation {
        cross_ref: Some("7".into()),
        connection: Connection::new("C1", "5001"),
        device: Some("5001".into()),
        account_code: Some(code.into()),
    }
}

fn associate_data(code: &str) -> Message {
    Message::AssociateData {
        call: Connection::new("C1", "5001"),
        account_code: code.into(),
    }
}

#[test]
fn call_information_event() {
    assert_eq!(
        call_information("1234").encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
            r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
            r#"<device><deviceIdentifier>5001</deviceIdentifier></device>"#,
            r#"<accountInfo>1234</accountInfo>"#,
            r#"</CallInformationEvent>"#,
        )
    );
    assert_eq!(
        call_information("Zürich").encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
            r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
            r#"<device><deviceIdentifier>5001</deviceIdentifier></device>"#,
            r#"<accountInfo>Zürich</accountInfo>"#,
            r#"</CallInformationEvent>"#,
        )
    );
    assert_eq!(
        call_information("1234").encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
            r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
            r#"<device><deviceIdentifier>5001</deviceIdentifier></device>"#,
            r#"<accountInfo>31323334</accountInfo>"#,
            r#"</CallInformationEvent>"#,
        )
    );
    assert_eq!(
        call_information("Zürich").encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<monitorCrossRefID>7</monitorCrossRefID>"#,
            r#"<connection><callID>C1</callID><deviceID>5001</deviceID></connection>"#,
            r#"<device><deviceIdentifier>5001</deviceIdentifier></device>"#,
            r#"<accountInfo>5AC3BC72696368</accountInfo>"#,
            r#"</CallInformationEvent>"#,
        )
    );

    // Text: as written, wrapped or bare device, pretty or prefixed.
    for doc in [
        r#"<?xml version="1.0" encoding="UTF-8"?><CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><connection><callID>C1</callID><deviceID>5001</deviceID></connection><device><deviceIdentifier>5001</deviceIdentifier></device><accountInfo>1234</accountInfo></CallInformationEvent>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <monitorCrossRefID>7</monitorCrossRefID>
  <connection>
    <callID>C1</callID>
    <deviceID>5001</deviceID>
  </connection>
  <device>5001</device>
  <callingDevice><deviceIdentifier>4001</deviceIdentifier></callingDevice>
  <accountInfo>1234</accountInfo>
  <authorisationCode>99</authorisationCode>
</CallInformationEvent>"#,
        r#"<csta:CallInformationEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:monitorCrossRefID>7</csta:monitorCrossRefID><csta:connection><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:connection><csta:device><csta:deviceIdentifier>5001</csta:deviceIdentifier></csta:device><csta:accountInfo>1234</csta:accountInfo></csta:CallInformationEvent>"#,
    ] {
        assert_eq!(decode_with(doc, &ed3()), call_information("1234"), "{doc}");
    }
    let zurich_text = r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><connection><callID>C1</callID><deviceID>5001</deviceID></connection><device>5001</device><accountInfo>Zürich</accountInfo></CallInformationEvent>"#;
    assert_eq!(decode_with(zurich_text, &ed3()), call_information("Zürich"));

    // Hex: upper or lower case, under the hex dialect only.
    for doc in [
        r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><monitorCrossRefID>7</monitorCrossRefID><connection><callID>C1</callID><deviceID>5001</deviceID></connection><device><deviceIdentifier>5001</deviceIdentifier></device><accountInfo>5AC3BC72696368</accountInfo></CallInformationEvent>"#,
        r#"<csta:CallInformationEvent xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <csta:monitorCrossRefID>7</csta:monitorCrossRefID>
  <csta:connection><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:connection>
  <csta:device>5001</csta:device>
  <csta:accountInfo>5ac3bc72696368</csta:accountInfo>
</csta:CallInformationEvent>"#,
    ] {
        assert_eq!(
            decode_with(doc, &ed6()),
            call_information("Zürich"),
            "{doc}"
        );
        // The text dialect cannot guess: it keeps the digits as they are.
        let Message::CallInformation { account_code, .. } = decode_with(doc, &ed3()) else {
            panic!("not a CallInformationEvent");
        };
        assert_eq!(account_code.unwrap().to_ascii_uppercase(), "5AC3BC72696368");
    }
    // "1234" read as hex is the two bytes 0x12 0x34.
    let digits =
        r#"<CallInformationEvent xmlns="x"><accountInfo>1234</accountInfo></CallInformationEvent>"#;
    assert_eq!(
        decode_with(digits, &ed6()),
        Message::CallInformation {
            cross_ref: None,
            connection: Connection::default(),
            device: None,
            account_code: Some("\u{12}\u{34}".into()),
        }
    );
    // Not hexBinary under the hex dialect: refused, naming the field.
    assert_eq!(
        Message::decode(
            br#"<CallInformationEvent xmlns="x"><accountInfo>123</accountInfo></CallInformationEvent>"#,
            &ed6()
        ),
        Err(DecodeError::Invalid {
            message: "CallInformationEvent",
            field: "accountInfo",
            value: "123".into()
        })
    );
    assert_eq!(
        Message::decode(
            br#"<CallInformationEvent xmlns="x"><monitorCrossRefID>7</monitorCrossRefID></CallInformationEvent>"#,
            &ed3()
        ),
        Ok(Message::CallInformation {
            cross_ref: Some("7".into()),
            connection: Connection::default(),
            device: None,
            account_code: None,
        })
    );
}

#[test]
fn associate_data_request() {
    assert_eq!(
        associate_data("1234").encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall>"#,
            r#"<accountCode>1234</accountCode>"#,
            r#"</AssociateData>"#,
        )
    );
    assert_eq!(
        associate_data("1234").encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall>"#,
            r#"<accountCode>31323334</accountCode>"#,
            r#"</AssociateData>"#,
        )
    );
    assert_eq!(
        associate_data("Zürich").encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6">"#,
            r#"<existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall>"#,
            r#"<accountCode>5AC3BC72696368</accountCode>"#,
            r#"</AssociateData>"#,
        )
    );
    // Special characters are escaped.
    assert_eq!(
        associate_data(r#"<a&b>"'"#).encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall>"#,
            r#"<accountCode>&lt;a&amp;b&gt;&quot;&apos;</accountCode>"#,
            r#"</AssociateData>"#,
        )
    );

    for doc in [
        r#"<?xml version="1.0" encoding="UTF-8"?><AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall><accountCode>1234</accountCode></AssociateData>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <existingCall>
    <callID>C1</callID>
    <deviceID typeOfNumber="dialingNumber">5001</deviceID>
  </existingCall>
  <accountCode>1234</accountCode>
  <correlatorData>00</correlatorData>
</AssociateData>"#,
        r#"<csta:AssociateData xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><csta:accountCode>1234</csta:accountCode><csta:existingCall><csta:callID>C1</csta:callID><csta:deviceID>5001</csta:deviceID></csta:existingCall></csta:AssociateData>"#,
    ] {
        assert_eq!(decode_with(doc, &ed3()), associate_data("1234"), "{doc}");
    }
    // Entities and character references are resolved.
    let escaped = r#"<AssociateData xmlns="x"><existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall><accountCode>&lt;a&amp;b&gt;&quot;&apos;&#x5A;&#252;</accountCode></AssociateData>"#;
    assert_eq!(decode_with(escaped, &ed3()), associate_data(r#"<a&b>"'Zü"#));
    for doc in [
        r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"><existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall><accountCode>5AC3BC72696368</accountCode></AssociateData>"#,
        r#"<AssociateData xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall><accountCode>5ac3bc72696368</accountCode></AssociateData>"#,
    ] {
        assert_eq!(decode_with(doc, &ed6()), associate_data("Zürich"), "{doc}");
    }
    assert_eq!(
        Message::decode(
            br#"<AssociateData xmlns="x"><accountCode>zz</accountCode></AssociateData>"#,
            &ed6()
        ),
        Err(DecodeError::Invalid {
            message: "AssociateData",
            field: "accountCode",
            value: "zz".into()
        })
    );
    assert_eq!(
        Message::decode(
            br#"<AssociateData xmlns="x"><existingCall><callID>C1</callID></existingCall></AssociateData>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "AssociateData",
            missing: "accountCode"
        })
    );
}

#[test]
fn associate_data_response() {
    let m = Message::AssociateDataResponse;
    assert_eq!(
        m.encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateDataResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
    assert_eq!(
        m.encode(&ed6()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<AssociateDataResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        )
    );
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?><AssociateDataResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<AssociateDataResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed2">
  <extensions/>
</AssociateDataResponse>"#,
            r#"<csta:AssociateDataResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"></csta:AssociateDataResponse>"#,
        ],
        &m,
    );
}

// ---------------------------------------------------------------------------------------------
// CSTAErrorCode

#[test]
fn csta_error_code_every_category() {
    let cases = [
        (
            "operation",
            "invalidDeviceID",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<operation>invalidDeviceID</operation>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "security",
            "sequenceNumberViolated",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<security>sequenceNumberViolated</security>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "stateIncompatibility",
            "invalidObjectState",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<stateIncompatibility>invalidObjectState</stateIncompatibility>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "systemResourceAvailability",
            "resourceBusy",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<systemResourceAvailability>resourceBusy</systemResourceAvailability>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            // The schema's own spelling.
            "systemResourceAvailibility",
            "resourceLimitExceeded",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<systemResourceAvailibility>resourceLimitExceeded</systemResourceAvailibility>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "subscribedResourceAvailability",
            "objectMonitorLimitExceeded",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<subscribedResourceAvailability>objectMonitorLimitExceeded</subscribedResourceAvailability>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "performanceManagement",
            "performanceLimitExceeded",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<performanceManagement>performanceLimitExceeded</performanceManagement>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "privateData",
            "vendorSpecific",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<privateData>vendorSpecific</privateData>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "unspecified",
            "unspecified",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<unspecified>unspecified</unspecified>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
        (
            "privateErrorCode",
            "4711",
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<CSTAErrorCode xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
                r#"<privateErrorCode>4711</privateErrorCode>"#,
                r#"</CSTAErrorCode>"#,
            ),
        ),
    ];
    for (category, value, golden) in cases {
        let m = Message::Error(CstaError::new(category, value));
        assert_eq!(m.encode(&ed3()), golden);
        assert_eq!(m.encode(&ed6()), golden.replace(ED3, ED6));
        let pretty = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CSTAErrorCode xmlns=\"{ED2}\">\n  \
             <extensions/>\n  <{category}>\n    {value}\n  </{category}>\n</CSTAErrorCode>\n"
        );
        let prefixed = format!(
            r#"<csta:CSTAErrorCode xmlns:csta="{ED6}"><csta:{category} detail="x">{value}</csta:{category}></csta:CSTAErrorCode>"#
        );
        assert_decodes(&[golden, pretty.as_str(), prefixed.as_str()], &m);
    }
    // The misspelling is kept as written, and corrected for whoever matches on it.
    let e = CstaError::new("systemResourceAvailibility", "resourceBusy");
    assert_eq!(e.canonical_category(), "systemResourceAvailability");
    assert_eq!(e.to_string(), "systemResourceAvailability/resourceBusy");
    assert_eq!(
        CstaError::new("operation", "invalidDeviceID").to_string(),
        "operation/invalidDeviceID"
    );
    assert_eq!(
        Message::decode(
            br#"<CSTAErrorCode xmlns="x"><somethingElse>1</somethingElse></CSTAErrorCode>"#,
            &ed3()
        ),
        Err(DecodeError::Missing {
            message: "CSTAErrorCode",
            missing: "an error category"
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Other messages and broken documents

#[test]
fn unused_messages_are_other() {
    assert_decodes(
        &[
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SnapshotDeviceResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
  <crossRefIDorSnapshotData><snapshotData/></crossRefIDorSnapshotData>
</SnapshotDeviceResponse>"#,
            r#"<csta:SnapshotDeviceResponse xmlns:csta="http://www.ecma-international.org/standards/ecma-323/csta/ed6"/>"#,
        ],
        &Message::Other {
            name: "SnapshotDeviceResponse".into(),
        },
    );
    assert_eq!(
        Message::Other {
            name: "SnapshotDevice".into()
        }
        .encode(&ed3()),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<SnapshotDevice xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"/>"#,
        )
    );
}

#[test]
fn broken_documents_are_xml_errors() {
    for doc in [
        &b""[..],
        b"   ",
        b"<?xml version=\"1.0\"?>",
        b"<MonitorStop><monitorCrossRefID>1</MonitorStop>",
        b"<MonitorStop>",
        b"<MonitorStop/><MonitorStop/>",
        b"text<MonitorStop/>",
        b"<a>&unknown;</a>",
        b"\xff\xfe<a/>",
    ] {
        let r = Message::decode(doc, &ed3());
        assert!(
            matches!(r, Err(DecodeError::Xml(_))),
            "{:?} gave {r:?}",
            String::from_utf8_lossy(doc)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// The SPEC's example request as we write it (compact), framed with invoke ID 0042.
///
/// Body length, counted by hand:
///
/// ```text
/// <?xml version="1.0" encoding="UTF-8"?>                                    38
/// <Escape xmlns="  15 + namespace 61 + ">  2                                78
/// <privateData><private>  13 + 9                                            22
/// <guestAssociatedExtension xmlns="urn:csta-router:hotdesk">  25+8+23+2     58
/// <action>associate</action>  8 + 9 + 9                                     26
/// <guestDevice>5001</guestDevice>  13 + 4 + 14                              31
/// <hostDevice>4001</hostDevice>  12 + 4 + 13                                29
/// </guestAssociatedExtension>                                               27
/// </private></privateData>  10 + 14                                         24
/// </Escape>                                                                  9
/// total 342; frame = 342 + 8 = 350 = 0x015E, so LL LL = 01 5E.
/// ```
const SPEC_EXAMPLE_FRAME: &[u8] = b"\x00\x00\x01\x5e\x30\x30\x34\x32\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Escape xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed3\">\
<privateData><private>\
<guestAssociatedExtension xmlns=\"urn:csta-router:hotdesk\">\
<action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>\
</guestAssociatedExtension>\
</private></privateData>\
</Escape>";

/// `AssociateData` with the account code "Zürich" (text dialect), invoke ID 0043.
///
/// Body length, counted by hand in bytes:
///
/// ```text
/// <?xml version="1.0" encoding="UTF-8"?>                                    38
/// <AssociateData xmlns="  22 + namespace 61 + ">  2                         85
/// <existingCall>  14
///   <callID>C1</callID>  8 + 2 + 9 = 19
///   <deviceID>5001</deviceID>  10 + 4 + 11 = 25
/// </existingCall>  15                                                       73
/// <accountCode>  13 + "Zürich" 7 (ü is C3 BC) + </accountCode>  14          34
/// </AssociateData>                                                          16
/// total 246 bytes (245 characters); frame = 254 = 0x00FE, so LL LL = 00 FE
/// (counting characters would give 00 FD).
/// ```
const ZURICH_FRAME: &[u8] = b"\x00\x00\x00\xfe\x30\x30\x34\x33\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<AssociateData xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed3\">\
<existingCall><callID>C1</callID><deviceID>5001</deviceID></existingCall>\
<accountCode>Z\xc3\xbcrich</accountCode>\
</AssociateData>";

/// `RequestSystemStatus`, invoke ID 0001: body 38 + 28 (`<RequestSystemStatus xmlns="`)
/// + 61 (namespace) + 3 (`"/>`) = 130; frame 138 = 0x008A.
const RSS_FRAME: &[u8] = b"\x00\x00\x00\x8a\x30\x30\x30\x31\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<RequestSystemStatus xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed3\"/>";

/// An event frame with an empty body: length 8 = just the header, invoke ID 9999.
const EMPTY_EVENT_FRAME: &[u8] = b"\x00\x00\x00\x08\x39\x39\x39\x39";

fn wire(invoke_id: InvokeId, m: &Message, d: &Dialect) -> Vec<u8> {
    let frame = encode_frame(invoke_id, m, d).unwrap();
    let mut buf = BytesMut::new();
    CstaCodec.encode(frame.clone(), &mut buf).unwrap();
    assert_eq!(frame.to_bytes().unwrap(), buf, "Frame::to_bytes agrees");
    buf.to_vec()
}

#[test]
fn spec_example_frame_encodes_to_the_bytes() {
    assert_eq!(SPEC_EXAMPLE_FRAME.len(), 350);
    assert_eq!(
        wire(invoke(42), &associate_5001_4001(), &ed3()),
        SPEC_EXAMPLE_FRAME
    );
}

#[test]
fn spec_example_frame_decodes() {
    let mut buf = BytesMut::from(SPEC_EXAMPLE_FRAME);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.invoke_id, invoke(42));
    assert_eq!(frame.invoke_id.to_string(), "0042");
    assert_eq!(&frame.body[..], &SPEC_EXAMPLE_FRAME[8..]);
    assert_eq!(
        Message::decode(&frame.body, &ed3()).unwrap(),
        associate_5001_4001()
    );
    assert!(CstaCodec.decode(&mut buf).unwrap().is_none());
}

#[test]
fn spec_example_pretty_printed_frame_decodes() {
    // The example exactly as the SPEC prints it: 39 + 79 + 24 + 61 + 90 + 30 + 26 + 9 = 358
    // bytes (each line with its newline, the last without); frame 366 = 0x016E.
    assert_eq!(SPEC_EXAMPLE.len(), 358);
    let mut bytes = b"\x00\x00\x01\x6e\x30\x30\x34\x32".to_vec();
    bytes.extend_from_slice(SPEC_EXAMPLE.as_bytes());
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.invoke_id.get(), 42);
    assert_eq!(&frame.body[..], SPEC_EXAMPLE.as_bytes());
    assert_eq!(
        Message::decode(&frame.body, &ed3()).unwrap(),
        associate_5001_4001()
    );
}

#[test]
fn frame_lengths_count_bytes_not_characters() {
    assert_eq!(ZURICH_FRAME.len(), 254);
    assert_eq!(
        wire(invoke(43), &associate_data("Zürich"), &ed3()),
        ZURICH_FRAME
    );
    let mut buf = BytesMut::from(ZURICH_FRAME);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.invoke_id.get(), 43);
    assert_eq!(
        Message::decode(&frame.body, &ed3()).unwrap(),
        associate_data("Zürich")
    );
}

#[test]
fn other_frames_by_hand() {
    assert_eq!(
        wire(invoke(1), &Message::RequestSystemStatus, &ed3()),
        RSS_FRAME
    );
    let mut buf = BytesMut::from(EMPTY_EVENT_FRAME);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame, Frame::new(InvokeId::EVENT, &b""[..]));
    assert!(buf.is_empty());
    assert_eq!(
        Frame::new(InvokeId::EVENT, &b""[..]).to_bytes().unwrap(),
        EMPTY_EVENT_FRAME
    );
    // Invoke ID 0000, as some switches send SystemStatus on connect.
    assert_eq!(
        Frame::new(InvokeId::ZERO, &b"<a/>"[..]).to_bytes().unwrap(),
        &b"\x00\x00\x00\x0c\x30\x30\x30\x30<a/>"[..]
    );
}

#[test]
fn frame_split_across_reads_a_byte_at_a_time() {
    let mut buf = BytesMut::new();
    for (i, b) in SPEC_EXAMPLE_FRAME.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let r = CstaCodec.decode(&mut buf).unwrap();
        if i + 1 < SPEC_EXAMPLE_FRAME.len() {
            assert!(r.is_none(), "a frame after only {} bytes", i + 1);
            assert_eq!(buf.len(), i + 1, "the partial frame stays in the buffer");
        } else {
            let frame = r.unwrap();
            assert_eq!(frame.invoke_id.get(), 42);
            assert_eq!(&frame.body[..], &SPEC_EXAMPLE_FRAME[8..]);
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn several_frames_in_one_read() {
    let mut bytes = Vec::new();
    for f in [
        RSS_FRAME,
        SPEC_EXAMPLE_FRAME,
        EMPTY_EVENT_FRAME,
        ZURICH_FRAME,
    ] {
        bytes.extend_from_slice(f);
    }
    // Plus the first 5 bytes of another frame.
    bytes.extend_from_slice(&RSS_FRAME[..5]);
    let mut buf = BytesMut::from(&bytes[..]);
    let mut got = Vec::new();
    while let Some(frame) = CstaCodec.decode(&mut buf).unwrap() {
        got.push(frame);
    }
    let ids: Vec<u16> = got.iter().map(|f| f.invoke_id.get()).collect();
    assert_eq!(ids, [1, 42, 9999, 43]);
    assert_eq!(&got[0].body[..], &RSS_FRAME[8..]);
    assert_eq!(&got[1].body[..], &SPEC_EXAMPLE_FRAME[8..]);
    assert!(got[2].body.is_empty());
    assert_eq!(&got[3].body[..], &ZURICH_FRAME[8..]);
    assert_eq!(&buf[..], &RSS_FRAME[..5], "the partial frame is kept");
    buf.extend_from_slice(&RSS_FRAME[5..]);
    let last = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(last.invoke_id.get(), 1);
    assert_eq!(
        Message::decode(&last.body, &ed3()).unwrap(),
        Message::RequestSystemStatus
    );
}

#[test]
fn largest_frame_length_is_unsigned() {
    // 0xFFFF = 65,535 bytes in all: 8 of header and 65,527 of body.
    let mut bytes = b"\x00\x00\xff\xff\x30\x30\x30\x37".to_vec();
    bytes.resize(65_535, b'x');
    let mut buf = BytesMut::from(&bytes[..65_534]);
    assert!(
        CstaCodec.decode(&mut buf).unwrap().is_none(),
        "one byte short: wait for it"
    );
    buf.extend_from_slice(&bytes[65_534..]);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame.invoke_id.get(), 7);
    assert_eq!(frame.body.len(), 65_527);
    assert!(buf.is_empty());
    // And the encoder writes FF FF for the largest body.
    let out = Frame::new(invoke(7), vec![b'x'; 65_527])
        .to_bytes()
        .unwrap();
    assert_eq!(&out[..], &bytes[..]);

    // 0x8000 = 32,768, negative if read as i16.
    let mut bytes = b"\x00\x00\x80\x00\x30\x30\x30\x38".to_vec();
    bytes.resize(32_768, b'y');
    bytes.extend_from_slice(EMPTY_EVENT_FRAME);
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = CstaCodec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame.invoke_id.get(), 8);
    assert_eq!(frame.body.len(), 32_760);
    assert_eq!(&buf[..], EMPTY_EVENT_FRAME);
}

#[test]
fn length_shorter_than_the_header() {
    for (bytes, len) in [
        (&b"\x00\x00\x00\x07\x30\x30\x30\x31"[..], 7),
        (&b"\x00\x00\x00\x00\x30\x30\x30\x31"[..], 0),
        (&b"\x00\x00\x00\x01\x30\x30\x30\x31<a/>"[..], 1),
    ] {
        let r = CstaCodec.decode(&mut BytesMut::from(bytes));
        assert!(
            matches!(r, Err(FrameError::LengthTooShort(l)) if l == len),
            "{bytes:?}: {r:?}"
        );
    }
}

#[test]
fn invoke_id_must_be_four_ascii_digits() {
    for (bytes, id) in [
        (&b"\x00\x00\x00\x08\x30\x30\x3a\x31"[..], *b"00:1"),
        (&b"\x00\x00\x00\x08\x2f\x30\x30\x31"[..], *b"/001"),
        (&b"\x00\x00\x00\x08\x20\x20\x34\x32"[..], *b"  42"),
        (&b"\x00\x00\x00\x0c\x30\x30\x34\x00<a/>"[..], *b"004\0"),
    ] {
        let r = CstaCodec.decode(&mut BytesMut::from(bytes));
        assert!(
            matches!(r, Err(FrameError::BadInvokeId(got)) if got == id),
            "{bytes:?}: {r:?}"
        );
    }
}

#[test]
fn first_two_bytes_must_be_zero() {
    for (bytes, a, b) in [
        (&b"\x01\x00\x00\x08\x30\x30\x30\x31"[..], 0x01, 0x00),
        (&b"\x00\x01\x00\x08\x30\x30\x30\x31"[..], 0x00, 0x01),
        // XML without a header: reported as soon as two bytes are in.
        (&b"<?"[..], b'<', b'?'),
        (&b"<?xml version=\"1.0\"?><a/>"[..], b'<', b'?'),
    ] {
        let r = CstaCodec.decode(&mut BytesMut::from(bytes));
        assert!(
            matches!(r, Err(FrameError::BadMagic(x, y)) if x == a && y == b),
            "{bytes:?}: {r:?}"
        );
    }
}

#[test]
fn body_too_large_to_encode() {
    // MonitorStart without the device is 197 bytes:
    //   38 + `<MonitorStart xmlns="` 21 + 61 + `">` 2 + `<monitorObject>` 15
    //   + `<deviceObject>` 14 + `</deviceObject>` 15 + `</monitorObject>` 16
    //   + `</MonitorStart>` 15 = 197.
    // So a device of 65,330 bytes makes the largest body (65,527) and one more is too long.
    let fits = Message::MonitorStart {
        device: "9".repeat(65_330),
    };
    let frame = encode_frame(invoke(1), &fits, &ed3()).unwrap();
    assert_eq!(frame.body.len(), 65_527);
    assert_eq!(&frame.to_bytes().unwrap()[..8], b"\x00\x00\xff\xff0001");

    let too_long = Message::MonitorStart {
        device: "9".repeat(65_331),
    };
    assert!(matches!(
        encode_frame(invoke(1), &too_long, &ed3()),
        Err(FrameError::TooLong(65_528))
    ));
    let mut buf = BytesMut::new();
    assert!(matches!(
        CstaCodec.encode(Frame::new(invoke(1), vec![0u8; 65_528]), &mut buf),
        Err(FrameError::TooLong(65_528))
    ));
    assert!(buf.is_empty(), "nothing written for a refused frame");
    assert!(matches!(
        Frame::new(invoke(1), vec![0u8; 100_000]).to_bytes(),
        Err(FrameError::TooLong(100_000))
    ));
}

#[test]
fn invoke_ids() {
    assert_eq!(&invoke(42).digits(), b"0042");
    assert_eq!(&InvokeId::EVENT.digits(), b"9999");
    assert_eq!(&InvokeId::ZERO.digits(), b"0000");
    assert_eq!(&invoke(1234).digits(), b"1234");
    assert_eq!(InvokeId::EVENT.get(), 9999);
    assert!(InvokeId::new(9999).is_some());
    assert!(InvokeId::new(10_000).is_none());
    assert_eq!(InvokeId::FIRST_REQUEST, 1);
    assert_eq!(InvokeId::LAST_REQUEST, 9998);
}

/// `csta-namespace = ""` (Zultys MX): documents without any namespace declaration.
#[test]
fn no_namespace_at_all() {
    let none = Dialect {
        csta_namespace: String::new(),
        ..ed3()
    };
    assert_eq!(
        Message::RequestSystemStatus.encode(&none),
        r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatus/>"#
    );
    assert_eq!(
        Message::MonitorStart {
            device: "5001".into()
        }
        .encode(&none),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<MonitorStart><monitorObject><deviceObject>5001</deviceObject></monitorObject>"#,
            r#"</MonitorStart>"#,
        )
    );
}
