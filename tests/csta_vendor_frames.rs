#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The router binary against a switch that names devices the OpenScape Voice way: a fake
//! switch written here (a TCP listener speaking CSTA frames, its answers and events written by
//! hand in the shapes OSV sends: ed4 namespace, numeric `monitorCrossRefID`, devices as
//! `N<+number>;displayNumber=…;noa=nk`, pretty-printed documents, Siemens private data). The
//! router is configured with `device-id-form = "osv"` and a `dn-prefix`: what it writes is
//! asserted on the bytes the switch receives, what it reads on what its clients get.

mod common;
use common::{config, process::RouterProcess, router::normalized, router::Client};

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const ED4: &str = "http://www.ecma-international.org/standards/ecma-323/csta/ed4";
/// The switch's numbers for the DN plan's 4000-5999.
const PREFIX: &str = "+4989700";

/// A frame: the 8-byte header (two zero bytes, the total length big-endian, the invoke ID as
/// four digits) and the body.
fn frame(invoke: u16, body: &str) -> Vec<u8> {
    let len = u16::try_from(8 + body.len()).unwrap();
    let mut out = vec![0, 0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(format!("{invoke:04}").as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// The root element's local name of a document (what the fake switch answers by).
fn root_name(body: &str) -> String {
    let start = body
        .char_indices()
        .find(|&(i, c)| c == '<' && !body[i..].starts_with("<?"))
        .map(|(i, _)| i + 1)
        .unwrap();
    let name: String = body[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    name.rsplit(':').next().unwrap().to_owned()
}

/// The text of the first `<name>` element of a document.
fn element_text<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find('<')?;
    Some(&body[start..start + len])
}

/// What the fake switch received and the monitors it granted.
#[derive(Default)]
struct Seen {
    /// Every request body, in order.
    bodies: Vec<String>,
    /// `deviceObject` → `monitorCrossRefID`.
    monitors: HashMap<String, String>,
}

/// A switch in the OpenScape Voice shape: answers what the router asks, sends what the test
/// pushes.
struct FakeOsv {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
    push: mpsc::UnboundedSender<String>,
}

impl FakeOsv {
    async fn start() -> FakeOsv {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (push, mut pushed) = mpsc::unbounded_channel::<String>();
        let log = seen.clone();
        tokio::spawn(async move {
            // One connection at a time: the router keeps one link.
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &log, &mut pushed).await;
            }
        });
        FakeOsv { addr, seen, push }
    }

    /// The first request body containing `needle`, within 5 s.
    async fn received(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .bodies
                .iter()
                .find(|b| b.contains(needle))
                .cloned();
            if let Some(body) = found {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "the switch received no {needle:?}; it received:\n{}",
                self.seen.lock().unwrap().bodies.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The cross-reference of the monitor started on `device` (as the router wrote it).
    async fn monitor(&self, device: &str) -> String {
        self.received(&format!("<deviceObject>{device}</deviceObject>"))
            .await;
        self.seen.lock().unwrap().monitors[device].clone()
    }

    /// Send an event (invoke ID 9999).
    fn send(&self, body: String) {
        self.push.send(body).unwrap();
    }
}

/// Serve one connection of the router until it closes.
async fn serve(
    stream: tokio::net::TcpStream,
    seen: &Mutex<Seen>,
    pushed: &mut mpsc::UnboundedReceiver<String>,
) {
    let (mut read, mut write) = stream.into_split();
    let mut monitors = 0u32;
    loop {
        let mut header = [0u8; 8];
        tokio::select! {
            r = read.read_exact(&mut header) => if r.is_err() { return },
            Some(event) = pushed.recv() => {
                if write.write_all(&frame(9999, &event)).await.is_err() {
                    return;
                }
                continue;
            }
        }
        assert_eq!(
            &header[..2],
            &[0, 0],
            "a frame header starts with two zero bytes"
        );
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut body = vec![0u8; len - 8];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let invoke: u16 = std::str::from_utf8(&header[4..]).unwrap().parse().unwrap();
        let body = String::from_utf8(body).unwrap();
        seen.lock().unwrap().bodies.push(body.clone());
        let answer = match root_name(&body).as_str() {
            "RequestSystemStatus" => format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><RequestSystemStatusResponse xmlns="{ED4}"><systemStatus>normal</systemStatus></RequestSystemStatusResponse>"#
            ),
            "MonitorStart" => {
                monitors += 1;
                let xref = format!("11366{monitors:05}");
                let device = element_text(&body, "deviceObject").unwrap().to_owned();
                seen.lock().unwrap().monitors.insert(device, xref.clone());
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><MonitorStartResponse xmlns="{ED4}"><monitorCrossRefID>{xref}</monitorCrossRefID></MonitorStartResponse>"#
                )
            }
            "MonitorStop" => format!(r#"<MonitorStopResponse xmlns="{ED4}"/>"#),
            "Escape" => {
                format!(r#"<?xml version="1.0" encoding="UTF-8"?><EscapeResponse xmlns="{ED4}"/>"#)
            }
            "AssociateData" => format!(r#"<AssociateDataResponse xmlns="{ED4}"/>"#),
            _ => continue,
        };
        if write.write_all(&frame(invoke, &answer)).await.is_err() {
            return;
        }
    }
}

/// A hot-desk event as this switch writes it: devices in its form, with OSV's decorations.
fn hotdesk_event(xref: &str, state: &str, guest: &str, host: Option<&str>) -> String {
    let host = host
        .map(|h| format!("<hostDevice>N&lt;{PREFIX}{h}&gt;;displayNumber={h}</hostDevice>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<PrivateEvent xmlns="{ED4}" xmlns:scx="http://www.siemens.com/schema/csta">
  <monitorCrossRefID>{xref}</monitorCrossRefID>
  <privateData>
    <private>
      <guestAssociatedEvent xmlns="urn:csta-router:hotdesk">
        <state>{state}</state>
        <guestDevice>N&lt;{PREFIX}{guest}&gt;;noa=nk</guestDevice>
        {host}
      </guestAssociatedEvent>
    </private>
  </privateData>
</PrivateEvent>"#
    )
}

/// A `CallInformationEvent` as OSV sends it (its device in `N<…>` form, its connection's
/// device as the bare number, correlator data and Siemens private data), with an
/// `accountInfo` when `code` is given.
fn call_information(xref: &str, call: &str, dn: &str, code: Option<&str>) -> String {
    let code = code
        .map(|c| format!("<accountInfo>{c}</accountInfo>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version='1.0' encoding='utf-8'?><CallInformationEvent xmlns="{ED4}" xmlns:scx="http://www.siemens.com/schema/csta"><monitorCrossRefID>{xref}</monitorCrossRefID><connection><callID>{call}</callID><deviceID>{PREFIX}{dn}</deviceID></connection><device><deviceIdentifier>N&lt;{PREFIX}{dn}&gt;;displayNumber={dn};noa=nk</deviceIdentifier></device><correlatorData><string>75726E3A</string></correlatorData><connectionInfo><mediaSessionInfo>voice</mediaSessionInfo></connectionInfo>{code}<extensions><privateData><private><scx:aliQueryTimeout><scx:aliConfiguredTimeout>200</scx:aliConfiguredTimeout></scx:aliQueryTimeout></private></privateData></extensions></CallInformationEvent>"#
    )
}

/// The router on one switch `osv` (DNs 4000-5999) linked to `fake`, in the OSV form.
fn router(fake: &FakeOsv) -> RouterProcess {
    let options = "request-timeout = \"800ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"\n";
    let lines =
        format!("csta-namespace = \"{ED4}\"\ndevice-id-form = \"osv\"\ndn-prefix = \"{PREFIX}\"\n");
    let text = config::head("", options)
        + &config::switch(
            "osv",
            &["4000-4999", "5000-5999"],
            &lines,
            &[&fake.addr.to_string()],
        );
    RouterProcess::start("osv-forms", &text)
}

fn decode_errors(metrics: &HashMap<String, f64>) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with("csta_router_csta_decode_errors_total") && k.contains("osv"))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osv_form_switch_end_to_end() {
    let fake = FakeOsv::start().await;
    let router = router(&fake);
    router.wait_connected(&["osv"]).await;
    let mut guest = Client::open(&router.url(), None, 1).await;
    let mut host = Client::open(&router.url(), None, 1).await;
    guest.register("5001").await;
    host.register("4001").await;

    // MonitorStart names the bare number with the prefix: no N<…> there.
    let start = fake
        .received("<deviceObject>+49897005001</deviceObject>")
        .await;
    assert!(
        start.contains("<monitorObject><deviceObject>+49897005001</deviceObject></monitorObject>"),
        "{start}"
    );
    let (x_guest, x_host) = (
        fake.monitor("+49897005001").await,
        fake.monitor("+49897004001").await,
    );

    // A hot-desk escape names both devices in the switch's private-data form.
    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    let escape = fake.received("guestAssociatedExtension").await;
    assert!(
        escape.contains(concat!(
            "<action>associate</action>",
            "<guestDevice>N&lt;+49897005001&gt;</guestDevice>",
            "<hostDevice>N&lt;+49897004001&gt;</hostDevice>"
        )),
        "{escape}"
    );

    // The switch's hot-desk events, devices decorated, reach both DNs' clients with DNs.
    for xref in [&x_guest, &x_host] {
        fake.send(hotdesk_event(xref, "established", "5001", Some("4001")));
    }
    for (client, monitored) in [(&mut guest, "5001"), (&mut host, "4001")] {
        let ev = client.recv().await;
        assert_eq!(
            normalized(&ev),
            json!({"message": "EventPrivateInfo", "privateMsgId": 1, "thisDn": "5001", "otherDn": "4001",
                   "monitoredDn": monitored, "switch": "osv", "eventSeq": "<seq>"}),
        );
    }
    let q = host
        .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
        .await;
    assert_eq!(
        q["hotDesk"],
        json!({"guestDn": "5001", "hostDn": "4001"}),
        "{q}"
    );

    account_codes(&fake, &mut guest, &mut host, [&x_guest, &x_host]).await;

    // The cancellation, host left out as some switches do.
    fake.send(hotdesk_event(&x_guest, "cancelled", "5001", None));
    let ev = guest.recv().await;
    assert_eq!(
        (ev["privateMsgId"].clone(), ev["thisDn"].clone()),
        (json!(2), json!("5001")),
        "{ev}"
    );

    // A call's events as OSV writes them, then a transfer away from 5001 naming it in N<…>
    // form: the call comes and goes, and no frame is a decode error.
    let call = "FF0001000000000077AB00C3D4E50000";
    for doc in osv_call_events(&x_guest, call) {
        fake.send(doc);
    }
    calls_become(&mut guest, "5001", 1).await;
    fake.send(osv_transfer(&x_guest, call));
    calls_become(&mut guest, "5001", 0).await;

    let (_, metrics) = router.scrape().await;
    assert_eq!(decode_errors(&metrics), 0.0);
    router.stop();
}

/// Account codes on the OSV-form switch: call information without one gives nothing, one
/// entered at 5001 (the event reported on both `monitors`, 5001's first) gives event 501 to
/// 5001's client only; one set by the client goes out with the bare number; the call then
/// leaves 5001's list when the switch clears 5001's connection, named in its form.
async fn account_codes(
    fake: &FakeOsv,
    guest: &mut Client,
    host: &mut Client,
    monitors: [&String; 2],
) {
    let xg = monitors[0];
    // Call information without a code: no event, no decode error.
    let call = "FF00010000000000E2E00E6416060000";
    for xref in monitors {
        fake.send(call_information(xref, call, "5001", None));
    }
    guest.expect_nothing().await;
    host.expect_nothing().await;

    // An account code entered at 5001, reported on both monitors: event 501 to 5001's
    // client only.
    for xref in monitors {
        fake.send(call_information(xref, call, "5001", Some("4711")));
    }
    let ev = guest.recv().await;
    let conn_id = ev["connId"].as_str().unwrap().to_owned();
    assert_eq!(
        normalized(&ev),
        json!({"message": "EventPrivateInfo", "privateMsgId": 501, "thisDn": "5001", "connId": conn_id,
               "extensions": {"AccountCode": "4711"}, "monitoredDn": "5001", "switch": "osv", "eventSeq": "<seq>"}),
    );
    host.expect_nothing().await;

    // An account code set by the client: AssociateData names the device as the bare number.
    let reply = guest
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 501, "extensions": {"AccountCode": "99"}}))
        .await;
    assert_eq!(reply["connId"], json!(conn_id), "{reply}");
    let data = fake.received("<accountCode>99</accountCode>").await;
    assert!(
        data.contains(&format!(
            "<existingCall><callID>{call}</callID><deviceID>+49897005001</deviceID></existingCall>"
        )),
        "{data}"
    );
    // (The event would come from the switch's CallInformationEvent: none sent here.)
    guest.expect_nothing().await;

    // The switch's own connection cleared, named in its form: the call leaves 5001's list.
    fake.send(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ConnectionClearedEvent xmlns="{ED4}">
  <monitorCrossRefID>{xg}</monitorCrossRefID>
  <droppedConnection>
    <callID>{call}</callID>
    <deviceID>N&lt;{PREFIX}5001&gt;;displayNumber=5001</deviceID>
  </droppedConnection>
  <releasingDevice><deviceIdentifier>N&lt;{PREFIX}5001&gt;;displayNumber=5001</deviceIdentifier></releasingDevice>
  <localConnectionInfo>null</localConnectionInfo>
  <cause>normalClearing</cause>
</ConnectionClearedEvent>"#
    ));
    calls_become(guest, "5001", 0).await;
}

/// Wait (5 s at most) until `dn`'s call list, as `RequestQueryAddress` gives it, has `count`
/// calls.
async fn calls_become(client: &mut Client, dn: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = client
            .request(json!({"message": "RequestQueryAddress", "thisDn": dn}))
            .await;
        if q["calls"].as_array().map(Vec::len) == Some(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dn} did not get to {count} calls: {q}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An outside caller's call to 5001, answered, held and retrieved, in OSV's shapes (one line
/// or pretty-printed, devices in `N<…>` form, vendor private data with `xsi:type`).
fn osv_call_events(xref: &str, call: &str) -> Vec<String> {
    let me = format!("N&lt;{PREFIX}5001&gt;;displayNumber=5001;noa=nk");
    let caller = "N&lt;+13055550177&gt;Line40001;displayNumber=3055550177;uid=FF00";
    let conn = format!("<callID>{call}</callID><deviceID>{PREFIX}5001</deviceID>");
    vec![
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<DeliveredEvent xmlns="{ED4}">
   <monitorCrossRefID>{xref}</monitorCrossRefID>
   <connection>
      <callID>{call}</callID>
      <deviceID>{PREFIX}5001</deviceID>
   </connection>
   <alertingDevice>
      <deviceIdentifier>{me}</deviceIdentifier>
   </alertingDevice>
   <callingDevice>
      <deviceIdentifier>{caller}</deviceIdentifier>
   </callingDevice>
   <lastRedirectionDevice>
      <notRequired/>
   </lastRedirectionDevice>
   <localConnectionInfo>alerting</localConnectionInfo>
   <correlatorData>
      <string>
         7
         5
         726E
      </string>
   </correlatorData>
   <cause>newCall</cause>
   <associatedCallingDevice>
      <notKnown/>
   </associatedCallingDevice>
</DeliveredEvent>"#
        ),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><EstablishedEvent xmlns="{ED4}"><monitorCrossRefID>{xref}</monitorCrossRefID><establishedConnection>{conn}</establishedConnection><answeringDevice><deviceIdentifier>{me}</deviceIdentifier></answeringDevice><callingDevice><deviceIdentifier>{caller}</deviceIdentifier></callingDevice><localConnectionInfo>connected</localConnectionInfo><cause>newCall</cause></EstablishedEvent>"#
        ),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><HeldEvent xmlns="{ED4}"><monitorCrossRefID>{xref}</monitorCrossRefID><heldConnection>{conn}</heldConnection><holdingDevice><deviceIdentifier>{me}</deviceIdentifier></holdingDevice><localConnectionInfo>hold</localConnectionInfo><cause>normal</cause></HeldEvent>"#
        ),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><RetrievedEvent xmlns="{ED4}"><monitorCrossRefID>{xref}</monitorCrossRefID><retrievedConnection>{conn}</retrievedConnection><retrievingDevice><deviceIdentifier>{me}</deviceIdentifier></retrievingDevice><localConnectionInfo>connected</localConnectionInfo><cause>normal</cause></RetrievedEvent>"#
        ),
        // A private event of a feature we do not use, typed the Avaya way.
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><PrivateEvent xmlns="{ED4}"><monitorCrossRefID>{xref}</monitorCrossRefID><privateData><private><VendorEvent xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:LampModeEvent" xmlns:ns1="urn:example:vendor"><lamp>5</lamp></VendorEvent></private></privateData></PrivateEvent>"#
        ),
    ]
}

/// 5001 transfers the call to 4400: the staying parties get a new call ID.
fn osv_transfer(xref: &str, call: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<TransferedEvent xmlns="{ED4}">
<monitorCrossRefID>{xref}</monitorCrossRefID>
<primaryOldCall>
<callID>{call}</callID>
<deviceID>N&lt;{PREFIX}5001&gt;</deviceID>
</primaryOldCall>
<transferringDevice>
<deviceIdentifier>N&lt;{PREFIX}5001&gt;;displayNumber=5001</deviceIdentifier>
</transferringDevice>
<transferredToDevice>
<deviceIdentifier>N&lt;{PREFIX}4400&gt;Line04400;displayNumber=4400</deviceIdentifier>
</transferredToDevice>
<transferredConnections>
<connectionListItem>
<newConnection>
<callID>03{call}</callID>
<deviceID>{PREFIX}4400</deviceID>
</newConnection>
<endpoint>
<deviceID>N&lt;{PREFIX}4400&gt;Line04400;displayNumber=4400</deviceID>
</endpoint>
</connectionListItem>
</transferredConnections>
<localConnectionInfo>null</localConnectionInfo>
<cause>singleStepTransfer</cause>
</TransferedEvent>"#
    )
}

/// `device-id-form` takes `"bare"` or `"osv"`; anything else is refused, naming the key and
/// the file, and the three keys are accepted in a `[[switch]]` table.
#[test]
fn device_form_keys_are_checked() {
    let switch = |lines: &str| {
        format!("[[switch]]\nname = \"pbx\"\ndns = [\"5000-5999\"]\n{lines}\n[[switch.link]]\naddress = \"127.0.0.1:3000\"\n")
    };
    let dir = common::process::files(&[
        (
            "good.toml",
            &switch("device-id-form = \"osv\"\ndn-prefix = \"+4989700\"\ndn-suffix = \"#\""),
        ),
        ("bad.toml", &switch("device-id-form = \"N<>\"")),
    ]);
    let check = |file: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_csta-router"))
            .arg("--check-config")
            .arg(file)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("panicked at"), "{text}");
        (out.status.code(), text)
    };
    let (code, text) = check("good.toml");
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check("bad.toml");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("device-id-form"), "{text}");
    assert!(text.contains("bad.toml"), "{text}");
    assert!(text.contains("bare") && text.contains("osv"), "{text}");
}
