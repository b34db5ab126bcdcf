#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tolerant reading of frames shaped like those real switches send (OpenScape Voice ed4,
//! Avaya AES/DMCC ed3 and ECMA-354, Zultys MX without namespace, an ed2 tool template), each
//! written here by hand with the same features: vendor namespaces and prefixes, unused
//! declarations, `xsi:schemaLocation`, `xsi:type` private data, `N<…>` devices, pretty-printed
//! values with whitespace inside, `localConnectionInfo` "null", transferred connections,
//! numeric cross-references, free-text private error codes, and one document that is not
//! well-formed. For each, what was read is asserted by value, devices through the switch's
//! [`DeviceNaming`].

mod csta_common;

use bytes::BytesMut;
use csta_common::tree::Element;
use csta_router::csta::{
    AppSession, Connection, ConnectionChange, CstaCodec, DecodeError, DeviceForm, DeviceNaming,
    Dialect, Message, SessionError,
};
use tokio_util::codec::Decoder;

/// OpenScape Voice numbering the DN plan 4000-4999 as +4989700xxxx.
fn naming() -> DeviceNaming {
    DeviceNaming {
        form: DeviceForm::Osv,
        prefix: "+4989700".into(),
        suffix: String::new(),
    }
}

fn plan(d: &str) -> bool {
    d.len() == 4 && d.starts_with('4') && d.bytes().all(|b| b.is_ascii_digit())
}

/// What a test reads from one document.
#[derive(Debug, Default, PartialEq, Eq)]
struct Read {
    /// The root's local name.
    root: String,
    cross_ref: Option<String>,
    call_id: Option<String>,
    /// The subject device (or the monitored device, or the device of call information) as
    /// `otherDn` would give it: the DN, else the undecorated number.
    device: Option<String>,
    /// The other device, likewise.
    other: Option<String>,
    cause: Option<String>,
    /// For call information only: the account code, or `None` when there is none.
    account: Option<Option<String>>,
    /// `systemStatus`, read from the tree (whatever the message type makes of it).
    status: Option<String>,
}

/// Decode `doc` in the default dialect (which must succeed) and read it.
fn read(doc: &str) -> Read {
    let m = Message::decode(doc.as_bytes(), &Dialect::default())
        .unwrap_or_else(|e| panic!("decode error {e} for:\n{doc}"));
    let n = naming();
    let norm = |raw: &Option<String>| raw.as_deref().and_then(|r| n.other_dn(r, plan));
    let tree = Element::parse(doc.as_bytes()).unwrap();
    let mut r = Read {
        root: m.name().to_owned(),
        cross_ref: m.cross_ref().map(str::to_owned),
        status: tree.child_value("systemStatus").map(str::to_owned),
        ..Read::default()
    };
    match &m {
        Message::Call(c) => {
            r.call_id = c.connection.call_id.clone();
            r.device = norm(&c.device);
            r.other = norm(&c.other_device);
            r.cause = c.cause.clone();
        }
        Message::CallInformation {
            connection,
            device,
            account_code,
            ..
        } => {
            r.call_id = connection.call_id.clone();
            r.device = norm(&device.clone().or(connection.device_id.clone()));
            r.account = Some(account_code.clone());
        }
        Message::MonitorStart { device } => r.device = norm(&Some(device.clone())),
        Message::MonitorStartResponse { cross_ref } | Message::MonitorStop { cross_ref } => {
            r.cross_ref = Some(cross_ref.clone())
        }
        Message::Other { name } => assert_eq!(name, &tree.name),
        _ => {}
    }
    assert_eq!(r.root, tree.name, "the message is named by its root");
    r
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn ed2_system_status_with_a_schema_location() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<SystemStatus
    xmlns="http://www.ecma.ch/standards/ecma-323/csta/ed2"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="
        http://www.ecma.ch/standards/ecma-323/csta/ed2  file://localhost/C:/csta/xsd/system-status.xsd
    ">
    <systemStatus>normal</systemStatus>
</SystemStatus>"#;
    let r = read(doc);
    assert_eq!(
        r,
        Read {
            root: "SystemStatus".into(),
            status: s("normal"),
            ..Read::default()
        }
    );
}

#[test]
fn self_closing_prefixed_system_status_without_its_child() {
    // JAXB output: ns3 prefix, an unused SOAP declaration, no systemStatus at all.
    let doc = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><ns3:SystemStatus xmlns:ns2="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns3="http://www.ecma-international.org/standards/ecma-323/csta/ed4"/>"#;
    let tree = Element::parse(doc.as_bytes()).unwrap();
    assert_eq!(tree.name, "SystemStatus");
    assert!(tree.children.is_empty());
    assert_eq!(tree.child_value("systemStatus"), None);
    // The message layer's reading of it (answered, not a decode error) belongs to the link's
    // system-status handling: here only that it is read as a SystemStatus or refused for the
    // missing child, never as another message or an XML error.
    match Message::decode(doc.as_bytes(), &Dialect::default()) {
        Ok(m) => assert_eq!(m.name(), "SystemStatus"),
        Err(e) => assert_eq!(
            e,
            DecodeError::Missing {
                message: "SystemStatus",
                missing: "systemStatus"
            }
        ),
    }
}

#[test]
fn prefixed_monitor_start_with_an_unused_declaration_and_attributes() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><ns3:MonitorStart xmlns:ns2="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns3="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><ns3:monitorObject><ns3:deviceObject typeOfNumber="dialingNumber"> +49897004321 </ns3:deviceObject></ns3:monitorObject></ns3:MonitorStart>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "MonitorStart".into(),
            device: s("4321"),
            ..Read::default()
        }
    );
}

#[test]
fn osv_monitor_start_response_with_a_numeric_cross_reference() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><monitorCrossRefID>1140270031</monitorCrossRefID></MonitorStartResponse>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "MonitorStartResponse".into(),
            cross_ref: s("1140270031"),
            ..Read::default()
        }
    );
}

#[test]
fn avaya_monitor_start_response_with_a_filter_and_xsi_type_private_data() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStartResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><monitorCrossRefID>7</monitorCrossRefID><actualMonitorFilter><physicalDeviceFeature><displayUpdated>false</displayUpdated><hookswitch>true</hookswitch><lampMode>false</lampMode></physicalDeviceFeature></actualMonitorFilter><extensions><privateData><private><AvayaEvents xmlns:ns1="http://www.avaya.com/csta" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="AvayaEvents"><invertFilter>false</invertFilter></AvayaEvents></private></privateData></extensions></MonitorStartResponse>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "MonitorStartResponse".into(),
            cross_ref: s("7"),
            ..Read::default()
        }
    );
}

#[test]
fn osv_monitor_stop_with_siemens_private_data() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStop xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><monitorCrossRefID>1140270032</monitorCrossRefID><extensions><privateData><private><scx:staticOndDN xmlns:scx="http://www.siemens.com/schema/csta">+49897004321</scx:staticOndDN></private></privateData></extensions></MonitorStop>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "MonitorStop".into(),
            cross_ref: s("1140270032"),
            ..Read::default()
        }
    );
}

#[test]
fn osv_service_initiated_on_one_line() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><ServiceInitiatedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><monitorCrossRefID>1140270033</monitorCrossRefID><initiatedConnection><callID>FF0001000000000055AA33C41D220000</callID><deviceID>+49897004321</deviceID></initiatedConnection><initiatingDevice><deviceIdentifier>N&lt;+49897004321&gt;;displayNumber=4321</deviceIdentifier></initiatingDevice><localConnectionInfo>initiated</localConnectionInfo><cause>newCall</cause><servicesPermitted><callControlServices><clearConnection>true</clearConnection></callControlServices><callAssociatedServices/><mediaAttachementServices/><routeingServices/><voiceServices/></servicesPermitted><mediaCallCharacteristics><mediaClass><voice>true</voice><image>false</image></mediaClass></mediaCallCharacteristics><extensions><privateData><private xmlns:scx="http://www.siemens.com/schema/csta"><scx:extendedServicesPermitted/></private></privateData></extensions></ServiceInitiatedEvent>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "ServiceInitiatedEvent".into(),
            cross_ref: s("1140270033"),
            call_id: s("FF0001000000000055AA33C41D220000"),
            device: s("4321"),
            cause: s("newCall"),
            ..Read::default()
        }
    );
}

#[test]
fn osv_originated_to_an_outside_number() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><OriginatedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><monitorCrossRefID>1140270033</monitorCrossRefID><originatedConnection><callID>FF0001000000000055AA33C41D220000</callID><deviceID>+49897004321</deviceID></originatedConnection><callingDevice><deviceIdentifier>+49897004321</deviceIdentifier></callingDevice><calledDevice><deviceIdentifier>N&lt;+17865550142&gt;;displayNumber=7865550142;noa=nk</deviceIdentifier></calledDevice><localConnectionInfo>connected</localConnectionInfo><cause>newCall</cause></OriginatedEvent>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "OriginatedEvent".into(),
            cross_ref: s("1140270033"),
            call_id: s("FF0001000000000055AA33C41D220000"),
            device: s("4321"),
            // Not in the plan: the number, its + kept.
            other: s("+17865550142"),
            cause: s("newCall"),
            ..Read::default()
        }
    );
}

/// Pretty-printed by whoever captured it: whitespace inside values, `notRequired`/`notKnown`
/// devices, correlator data split over lines, a vendor element.
const OSV_DELIVERED_PRETTY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DeliveredEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4">
    <monitorCrossRefID>
        1140270034
    </monitorCrossRefID>
    <connection>
        <callID>FF000100000000009E31C0AA5B310000</callID>
        <deviceID>+49897004322</deviceID>
    </connection>
    <alertingDevice>
        <deviceIdentifier>N&lt;+49897004322&gt;;noa=nk</deviceIdentifier>
    </alertingDevice>
    <callingDevice>
        <deviceIdentifier>N&lt;+13055550177&gt;Line40001;displayNumber=3055550177;uid=FF000100000000009E31C0AA5B310000</deviceIdentifier>
    </callingDevice>
    <lastRedirectionDevice>
        <notRequired/>
    </lastRedirectionDevice>
    <localConnectionInfo>alerting</localConnectionInfo>
    <correlatorData>
        <string>
            7
            5
            72
            6E3A6E656E61
        </string>
    </correlatorData>
    <cause>enteringDistribution</cause>
    <associatedCallingDevice>
        <notKnown/>
    </associatedCallingDevice>
    <extensions>
        <privateData>
            <private xmlns:scx="http://www.siemens.com/schema/csta">
                <scx:cdrTrunkSeizureDateTime>2026-03-02T10:11:12</scx:cdrTrunkSeizureDateTime>
            </private>
        </privateData>
    </extensions>
</DeliveredEvent>
"#;

#[test]
fn osv_delivered_pretty_printed() {
    assert_eq!(
        read(OSV_DELIVERED_PRETTY),
        Read {
            root: "DeliveredEvent".into(),
            cross_ref: s("1140270034"),
            call_id: s("FF000100000000009E31C0AA5B310000"),
            device: s("4322"),
            other: s("+13055550177"),
            cause: s("enteringDistribution"),
            ..Read::default()
        }
    );
}

/// One "r", `localConnectionInfo` "null", the staying parties' new connections with their
/// endpoints in `N<…>` form.
const OSV_TRANSFERED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<TransferedEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4">
<monitorCrossRefID>1140270035</monitorCrossRefID>
<primaryOldCall>
<callID>FF00010000000000B1C2D3E4F5060000</callID>
<deviceID>+49897004321</deviceID>
</primaryOldCall>
<transferringDevice>
<deviceIdentifier>+49897004321</deviceIdentifier>
</transferringDevice>
<transferredToDevice>
<deviceIdentifier>N&lt;+49897004400&gt;Line04400;displayNumber=4400</deviceIdentifier>
</transferredToDevice>
<transferredConnections>
<connectionListItem>
<newConnection>
<callID>0300010000000000B1C2D3E4F5060000</callID>
<deviceID>+49897004400</deviceID>
</newConnection>
<endpoint>
<deviceID>N&lt;+49897004400&gt;Line04400;displayNumber=4400</deviceID>
</endpoint>
</connectionListItem>
<connectionListItem>
<newConnection>
<callID>0300010000000000B1C2D3E4F5060000</callID>
<deviceID>N&lt;+13055550177&gt;;uid=FF00010000000000B1C2D3E4F5060000</deviceID>
</newConnection>
<endpoint>
<deviceID>N&lt;+13055550177&gt;+ 1(305)5550177;displayNumber=3055550177</deviceID>
</endpoint>
</connectionListItem>
</transferredConnections>
<localConnectionInfo>null</localConnectionInfo>
<correlatorData>
<string>75726E3A6E656E61</string>
</correlatorData>
<cause>singleStepTransfer</cause>
<servicesPermitted>
<callControlServices/>
</servicesPermitted>
</TransferedEvent>"#;

#[test]
fn osv_transfer_with_new_connections() {
    assert_eq!(
        read(OSV_TRANSFERED),
        Read {
            root: "TransferedEvent".into(),
            cross_ref: s("1140270035"),
            call_id: s("FF00010000000000B1C2D3E4F5060000"),
            device: s("4321"),
            other: s("4400"),
            cause: s("singleStepTransfer"),
            ..Read::default()
        }
    );
    let Message::Call(ev) =
        Message::decode(OSV_TRANSFERED.as_bytes(), &Dialect::default()).unwrap()
    else {
        panic!("not a call event");
    };
    let new = |call: &str, dev: &str| ConnectionChange {
        old: None,
        new: Some(Connection::new(call, dev)),
    };
    // As written, then with devices as DNs or numbers.
    assert_eq!(
        ev.changes,
        vec![
            new("0300010000000000B1C2D3E4F5060000", "+49897004400"),
            new(
                "0300010000000000B1C2D3E4F5060000",
                "N<+13055550177>;uid=FF00010000000000B1C2D3E4F5060000"
            ),
        ]
    );
    let ev = naming().normalize_call(&ev, plan).into_owned();
    assert_eq!(
        ev.changes,
        vec![
            new("0300010000000000B1C2D3E4F5060000", "4400"),
            new("0300010000000000B1C2D3E4F5060000", "+13055550177"),
        ]
    );
    assert_eq!(
        ev.connection,
        Connection::new("FF00010000000000B1C2D3E4F5060000", "4321")
    );
}

#[test]
fn osv_call_information_without_an_account_code() {
    let doc = r#"<?xml version='1.0' encoding='utf-8'?><CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4" xmlns:scx="http://www.siemens.com/schema/csta"><monitorCrossRefID>1140270036</monitorCrossRefID><connection><callID>FF00010000000000C0FFEE0012340000</callID><deviceID>+49897004321</deviceID></connection><device><deviceIdentifier>N&lt;+49897004321&gt;;noa=nk</deviceIdentifier></device><correlatorData><string>75726E3A</string></correlatorData><connectionInfo><mediaSessionInfo>voice</mediaSessionInfo></connectionInfo><callCharacteristics><acdCall>false</acdCall><priorityCall>true</priorityCall></callCharacteristics><extensions><privateData><private><scx:aliQueryTimeout><scx:aliDBInfo>192.0.2.7:9991</scx:aliDBInfo><scx:aliConfiguredTimeout>150</scx:aliConfiguredTimeout></scx:aliQueryTimeout></private></privateData></extensions></CallInformationEvent>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "CallInformationEvent".into(),
            cross_ref: s("1140270036"),
            call_id: s("FF00010000000000C0FFEE0012340000"),
            device: s("4321"),
            account: Some(None),
            ..Read::default()
        }
    );
}

#[test]
fn osv_call_information_with_an_account_code_and_a_sip_device() {
    let doc = r#"<CallInformationEvent xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4">
  <monitorCrossRefID>1140270037</monitorCrossRefID>
  <connection><callID>FF00010000000000C0FFEE0012350000</callID><deviceID>+49897004321</deviceID></connection>
  <device><deviceIdentifier typeOfNumber="other">&lt;sip:+49897004321@osv.example.net&gt;</deviceIdentifier></device>
  <accountInfo> 7788 </accountInfo>
</CallInformationEvent>"#;
    assert_eq!(
        read(doc),
        Read {
            root: "CallInformationEvent".into(),
            cross_ref: s("1140270037"),
            call_id: s("FF00010000000000C0FFEE0012350000"),
            device: s("4321"),
            account: Some(s("7788")),
            ..Read::default()
        }
    );
}

#[test]
fn responses_we_do_not_use_are_other_messages() {
    for (root, doc) in [
        (
            "MakeCallResponse",
            r#"<?xml version="1.0" encoding="UTF-8"?><MakeCallResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><callingDevice><callID>FF0001000000000077EE11D0A9880000</callID><deviceID>+49897004321</deviceID></callingDevice><calledDevice>+17865550142</calledDevice></MakeCallResponse>"#,
        ),
        (
            "SystemRegisterResponse",
            r#"<?xml version="1.0" encoding="UTF-8"?><SystemRegisterResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed4"><sysStatRegisterID>41ss</sysStatRegisterID></SystemRegisterResponse>"#,
        ),
        (
            "SystemRegisterResponse",
            r#"<?xml version="1.0" encoding="UTF-8"?><SystemRegisterResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3"><sysStatRegisterID>3</sysStatRegisterID><actualStatusFilter><initializing>false</initializing><enabled>false</enabled><normal>false</normal><messageLost>true</messageLost><disabled>false</disabled></actualStatusFilter><extensions><privateData><private><AvayaEvents xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:SystemRegisterPrivateData" xmlns:ns1="http://www.avaya.com/csta"><linkUp>true</linkUp></AvayaEvents></private></privateData></extensions></SystemRegisterResponse>"#,
        ),
        (
            // Zultys: no namespace, no declaration, a numeric call ID.
            "MakeCallResponse",
            r#"<MakeCallResponse><callingDevice><callID>3142</callID><deviceID>231</deviceID></callingDevice><calledDevice>+13055550177</calledDevice></MakeCallResponse>"#,
        ),
    ] {
        let r = read(doc);
        assert_eq!(
            r,
            Read {
                root: root.into(),
                ..Read::default()
            }
        );
        // System registration has a message of its own; the rest is of no use to the router.
        assert!(matches!(
            Message::decode(doc.as_bytes(), &Dialect::default()).unwrap(),
            Message::Other { .. } | Message::SystemRegister(_)
        ));
    }
}

#[test]
fn ecma_354_session_responses_are_read_with_their_values() {
    let pos = |id: &str, version: Option<&str>, duration: u32| {
        Message::AppSession(AppSession::StartPos {
            session_id: id.to_owned(),
            protocol_version: version.map(str::to_owned),
            duration: Some(duration),
        })
    };
    for (expected, doc) in [
        (
            // Avaya: an empty actualProtocolVersion.
            pos("5A8F30C21E7B4D09A6C3F1E2D4B5A697-1", None, 120),
            r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSessionPosResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>5A8F30C21E7B4D09A6C3F1E2D4B5A697-1</sessionID><actualProtocolVersion></actualProtocolVersion><actualSessionDuration>120</actualSessionDuration></StartApplicationSessionPosResponse>"#,
        ),
        (
            // OpenScape Voice: the prefix declared, the root left unqualified, actualHBT.
            pos(
                "007743120",
                Some("http://www.ecma-international.org/standards/ecma-323/csta/ed4"),
                300,
            ),
            r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSessionPosResponse xmlns:aps="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>007743120</sessionID><actualProtocolVersion>http://www.ecma-international.org/standards/ecma-323/csta/ed4</actualProtocolVersion><actualSessionDuration>300</actualSessionDuration><extensions><actualHBT>0</actualHBT></extensions></StartApplicationSessionPosResponse>"#,
        ),
        (
            Message::AppSession(AppSession::StartNeg(SessionError::Defined(
                "invalidApplicationInfo".to_owned(),
            ))),
            r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSessionNegResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><errorCode><definedError>invalidApplicationInfo</definedError></errorCode></StartApplicationSessionNegResponse>"#,
        ),
    ] {
        let m = Message::decode(doc.as_bytes(), &Dialect::default()).unwrap();
        assert_eq!(m, expected, "{doc}");
    }
}

#[test]
fn zultys_error_with_a_free_text_private_code() {
    let doc =
        r#"<CSTAErrorCode><privateErrorCode>Line Busy Now</privateErrorCode></CSTAErrorCode>"#;
    let Message::Error(e) = Message::decode(doc.as_bytes(), &Dialect::default()).unwrap() else {
        panic!("not an error");
    };
    assert_eq!(
        (e.category.as_str(), e.value.as_str()),
        ("privateErrorCode", "Line Busy Now")
    );
    assert_eq!(read(doc).root, "CSTAErrorCode");
}

#[test]
fn a_document_that_is_not_well_formed_is_refused_cleanly() {
    // No space between two attributes, as one vendor's sample has it.
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?><GetDeviceIdResponse xmlns="http://www.avaya.com/csta"><device typeOfNumber="other" mediaClass="voice"bitRate="constant">4321:CM7:192.0.2.10:0</device></GetDeviceIdResponse>"#;
    match Message::decode(doc.as_bytes(), &Dialect::default()) {
        Err(DecodeError::Xml(_)) => {}
        other => panic!("expected an XML error, got {other:?}"),
    }
    // The DMCC device ID it carries names extension 4321.
    assert_eq!(
        naming().dn_in("4321:CM7:192.0.2.10:0", plan).unwrap(),
        "4321"
    );
}

#[test]
fn frames_with_a_hand_written_header_decode() {
    for (doc, root) in [
        (OSV_DELIVERED_PRETTY, "DeliveredEvent"),
        (OSV_TRANSFERED, "TransferedEvent"),
    ] {
        let len = u16::try_from(8 + doc.len()).unwrap();
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(b"9999");
        bytes.extend_from_slice(doc.as_bytes());
        // And the first bytes of a next frame, which stays in the buffer.
        bytes.extend_from_slice(&[0, 0, 0]);
        let frame = CstaCodec.decode(&mut bytes).unwrap().unwrap();
        assert_eq!(frame.invoke_id.get(), 9999);
        assert_eq!(&frame.body[..], doc.as_bytes());
        assert_eq!(&bytes[..], &[0, 0, 0]);
        let m = Message::decode(&frame.body, &Dialect::default()).unwrap();
        assert_eq!(m.name(), root);
        assert_eq!(read(doc).root, root);
    }
}
