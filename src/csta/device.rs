//! Device identifiers as switches write them, mapped to and from the DN plan (SPEC §14).
//!
//! Our own simulator names devices by their bare DN, but real switches do not: OpenScape
//! Voice writes `N<+4989700712345>;displayNumber=…;noa=nk` or `<sip:4001@host>`, Avaya's DMCC
//! writes `4001:switch:10.0.0.1:0`, numbers come with `+` and a country code, and unknown
//! parties as `notKnown`. A switch's [`DeviceNaming`] (`device-id-form`, `dn-prefix`,
//! `dn-suffix`) says how to write a DN for that switch and how to find the DN in what it
//! writes, so that events naming a device in the switch's form still reach the DN's clients.
//!
//! Reading, in this order: the text inside `N<…>` (what follows `>` is dropped); `<`/`>`
//! around a URI, `sip:`/`sips:`/`tel:`, URI parameters after `;` and `@host` stripped; a DMCC
//! ID `ext:switch:ip:instance` gives `ext`; then `dn-prefix`/`dn-suffix` are removed when
//! present (a number without them is tried as is).

use std::borrow::Cow;

use serde::Deserialize;

use super::call::{CallEvent, Connection, ConnectionChange};

/// How a switch writes a device inside private data (`device-id-form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceForm {
    /// The number itself (our simulator, most switches).
    #[default]
    Bare,
    /// OpenScape Voice: `N<number>`.
    Osv,
}

/// A switch's mapping between its device identifiers and the DN plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceNaming {
    /// The form of devices in private data.
    pub form: DeviceForm,
    /// Written before a DN (`dn-prefix`, e.g. the country and area code), removed on reading.
    pub prefix: String,
    /// Written after a DN (`dn-suffix`), removed on reading.
    pub suffix: String,
}

/// Values that name no device at all.
const NO_DEVICE: [&str; 2] = ["notKnown", "notRequired"];

impl DeviceNaming {
    /// What we write for a DN inside private data (hot-desk `guestDevice`/`hostDevice`):
    /// `N<prefix+dn+suffix>` for [`DeviceForm::Osv`], `prefix+dn+suffix` for
    /// [`DeviceForm::Bare`], because the switch compares them with its own names.
    pub fn private_device(&self, dn: &str) -> String {
        match self.form {
            DeviceForm::Bare => self.plain_device(dn),
            DeviceForm::Osv => format!("N<{}>", self.plain_device(dn)),
        }
    }

    /// What we write in `MonitorStart` `deviceObject` and `AssociateData` `deviceID`:
    /// `prefix+dn+suffix`, the bare number as real clients of such a switch send it.
    pub fn plain_device(&self, dn: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + dn.len() + self.suffix.len());
        out.push_str(&self.prefix);
        out.push_str(dn);
        out.push_str(&self.suffix);
        out
    }

    /// The number inside any known form (`N<…>…`, `sip:`/`tel:`, `@host`, DMCC
    /// `ext:switch:ip:instance`), with the prefix and suffix removed when present; `None` for
    /// `notKnown`, `notRequired` or an empty value.
    pub fn number<'a>(&self, raw: &'a str) -> Option<Cow<'a, str>> {
        undecorated(raw).map(|n| Cow::Borrowed(self.strip_affixes(n)))
    }

    /// The DN of a device when the plan has it: the number without prefix/suffix, then the
    /// number as is; `None` when the plan has neither (or the value names no device).
    pub fn dn_in(&self, raw: &str, plan_has: impl Fn(&str) -> bool) -> Option<String> {
        let number = undecorated(raw)?;
        let stripped = self.strip_affixes(number);
        [stripped, number]
            .into_iter()
            .find(|n| plan_has(n))
            .map(str::to_owned)
    }

    /// `otherDn`: the DN when the plan has it, else the undecorated number (keeping a leading
    /// `+`, so that it stays dialable); `None` for `notKnown`, `notRequired` or empty.
    pub fn other_dn(&self, raw: &str, plan_has: impl Fn(&str) -> bool) -> Option<String> {
        self.normalized(raw, plan_has).map(str::to_owned)
    }

    /// What [`other_dn`](Self::other_dn) gives, borrowed from `raw`: the number without
    /// prefix/suffix when the plan has it, else the undecorated number.
    fn normalized<'a>(&self, raw: &'a str, plan_has: impl Fn(&str) -> bool) -> Option<&'a str> {
        let number = undecorated(raw)?;
        let stripped = self.strip_affixes(number);
        Some(if stripped != number && plan_has(stripped) {
            stripped
        } else {
            number
        })
    }

    /// The call event with every device it names (subject, other, the connection's and the
    /// transferred connections') as [`other_dn`](Self::other_dn) gives it: the DN when the
    /// plan has it, else the undecorated number, absent for `notKnown`. Borrowed when nothing
    /// changes (a switch that writes bare DNs), so the common case costs no copy.
    pub fn normalize_call<'a>(
        &self,
        ev: &'a CallEvent,
        plan_has: impl Fn(&str) -> bool,
    ) -> Cow<'a, CallEvent> {
        // What `other_dn` gives, as `Some(new value)` when it differs from the value as
        // written; without allocating when it does not (the hot path of bare DNs).
        let fix = |v: &Option<String>| -> Option<Option<String>> {
            let raw = v.as_deref()?;
            let Some(norm) = self.normalized(raw, &plan_has) else {
                return Some(None);
            };
            (norm != raw).then(|| Some(norm.to_owned()))
        };
        let conns = ev
            .changes
            .iter()
            .flat_map(|c| [&c.old, &c.new])
            .flatten()
            .chain([&ev.connection]);
        let unchanged = [&ev.device, &ev.other_device]
            .into_iter()
            .all(|v| fix(v).is_none())
            && conns.into_iter().all(|c| fix(&c.device_id).is_none());
        if unchanged {
            return Cow::Borrowed(ev);
        }
        let apply = |v: &Option<String>| fix(v).unwrap_or_else(|| v.clone());
        let conn = |c: &Connection| Connection {
            call_id: c.call_id.clone(),
            device_id: apply(&c.device_id),
        };
        Cow::Owned(CallEvent {
            kind: ev.kind,
            cross_ref: ev.cross_ref.clone(),
            connection: conn(&ev.connection),
            device: apply(&ev.device),
            other_device: apply(&ev.other_device),
            cause: ev.cause.clone(),
            changes: ev
                .changes
                .iter()
                .map(|c| ConnectionChange {
                    old: c.old.as_ref().map(conn),
                    new: c.new.as_ref().map(conn),
                })
                .collect(),
        })
    }

    /// `number` without the prefix and the suffix, each removed only when present.
    fn strip_affixes<'a>(&self, number: &'a str) -> &'a str {
        let mut n = number;
        if !self.prefix.is_empty() {
            n = n.strip_prefix(self.prefix.as_str()).unwrap_or(n);
        }
        if !self.suffix.is_empty() {
            n = n.strip_suffix(self.suffix.as_str()).unwrap_or(n);
        }
        if n.is_empty() {
            number
        } else {
            n
        }
    }
}

/// The number inside a device identifier, before prefix/suffix are considered.
fn undecorated(raw: &str) -> Option<&str> {
    let mut v = raw.trim();
    // OpenScape Voice: `N<number>` then anything (`Line00001;displayNumber=…;noa=nk`).
    if let Some(inner) = v.strip_prefix("N<") {
        v = inner.split('>').next().unwrap_or_default().trim();
    }
    // A URI in angle brackets: `<sip:4001@host>`.
    if let Some(inner) = v.strip_prefix('<') {
        v = inner.split('>').next().unwrap_or_default().trim();
    }
    let mut uri = false;
    for scheme in ["sip:", "sips:", "tel:"] {
        if v.len() >= scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme) {
            v = &v[scheme.len()..];
            uri = true;
            break;
        }
    }
    if uri {
        // URI parameters: `tel:+4930123;phone-context=…`, `sip:4001@host;transport=tcp`.
        v = v.split(';').next().unwrap_or_default();
    }
    // `4001@host` (with or without a scheme).
    v = v.split('@').next().unwrap_or_default();
    // DMCC: `ext:switch:ip:instance`.
    v = v.split(':').next().unwrap_or_default().trim();
    if v.is_empty() || NO_DEVICE.contains(&v) {
        None
    } else {
        Some(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bare() -> DeviceNaming {
        DeviceNaming::default()
    }

    fn osv(prefix: &str, suffix: &str) -> DeviceNaming {
        DeviceNaming {
            form: DeviceForm::Osv,
            prefix: prefix.into(),
            suffix: suffix.into(),
        }
    }

    fn num(n: &DeviceNaming, raw: &str) -> Option<String> {
        n.number(raw).map(Cow::into_owned)
    }

    #[test]
    fn writes_the_switch_form() {
        assert_eq!(bare().private_device("4001"), "4001");
        assert_eq!(bare().plain_device("4001"), "4001");
        let n = osv("+4989700", "");
        assert_eq!(n.private_device("4001"), "N<+49897004001>");
        assert_eq!(n.plain_device("4001"), "+49897004001");
        let n = DeviceNaming {
            form: DeviceForm::Bare,
            prefix: "9".into(),
            suffix: "#".into(),
        };
        assert_eq!(n.private_device("4001"), "94001#");
        assert_eq!(osv("", "").private_device("4001"), "N<4001>");
    }

    #[test]
    fn reads_a_bare_number() {
        assert_eq!(num(&bare(), "4001").unwrap(), "4001");
        assert_eq!(num(&bare(), "  4001\n ").unwrap(), "4001");
        assert_eq!(num(&bare(), "+17867104700").unwrap(), "+17867104700");
    }

    #[test]
    fn reads_the_osv_forms() {
        let n = bare();
        assert_eq!(
            num(&n, "N<+17867100001>Line00001;displayNumber=00001").unwrap(),
            "+17867100001"
        );
        assert_eq!(num(&n, "N<3021061290000>;noa=nk").unwrap(), "3021061290000");
        assert_eq!(
            num(
                &n,
                "N<+17867100000>+ 30(210)8216100;displayNumber=7867100000;uid=FF0001"
            )
            .unwrap(),
            "+17867100000"
        );
        assert_eq!(num(&n, "N<4001>").unwrap(), "4001");
        assert_eq!(num(&n, "N<>;noa=nk"), None);
    }

    #[test]
    fn reads_uris() {
        let n = bare();
        assert_eq!(num(&n, "<sip:4001@osv.example.com>").unwrap(), "4001");
        assert_eq!(num(&n, "sip:4001@10.0.0.1:5060").unwrap(), "4001");
        assert_eq!(num(&n, "SIP:4001@host;transport=tcp").unwrap(), "4001");
        assert_eq!(num(&n, "sips:4001@host").unwrap(), "4001");
        assert_eq!(num(&n, "tel:+4930123456").unwrap(), "+4930123456");
        assert_eq!(num(&n, "tel:+4930123;phone-context=x").unwrap(), "+4930123");
        assert_eq!(num(&n, "4001@host").unwrap(), "4001");
    }

    #[test]
    fn reads_dmcc_device_ids() {
        assert_eq!(num(&bare(), "4001:S8300:10.0.0.1:0").unwrap(), "4001");
    }

    #[test]
    fn no_device_for_unknown_or_empty() {
        for raw in ["", "   ", "notKnown", "notRequired", "<sip:@host>"] {
            assert_eq!(num(&bare(), raw), None, "{raw:?}");
            assert_eq!(bare().other_dn(raw, |_| true), None, "{raw:?}");
            assert_eq!(bare().dn_in(raw, |_| true), None, "{raw:?}");
        }
    }

    #[test]
    fn prefix_and_suffix_removed_when_present() {
        let n = osv("+4989700", "#");
        assert_eq!(num(&n, "N<+49897004001#>;noa=nk").unwrap(), "4001");
        assert_eq!(num(&n, "+49897004001").unwrap(), "4001");
        assert_eq!(num(&n, "4001").unwrap(), "4001");
        // The prefix alone is not a number of its own.
        assert_eq!(num(&n, "+4989700").unwrap(), "+4989700");
    }

    #[test]
    fn dn_when_the_plan_has_it() {
        let plan = |d: &str| d == "4001" || d == "+4930555";
        let n = osv("+4989700", "");
        assert_eq!(n.dn_in("N<+49897004001>;noa=nk", plan).unwrap(), "4001");
        assert_eq!(n.dn_in("4001", plan).unwrap(), "4001");
        // Without the prefix it is not in the plan; as is it is.
        assert_eq!(n.dn_in("tel:+4930555", plan).unwrap(), "+4930555");
        assert_eq!(n.dn_in("N<+49897004002>", plan), None);
    }

    #[test]
    fn call_events_name_dns() {
        use crate::csta::CallEventKind;
        let plan = |d: &str| d == "4001" || d == "5001";
        let n = osv("+4989700", "");
        let bare_event = CallEvent {
            kind: CallEventKind::Transferred,
            cross_ref: Some("1184300014".into()),
            connection: Connection::new("C1", "4001"),
            device: Some("4001".into()),
            other_device: Some("+17867100000".into()),
            cause: Some("singleStepTransfer".into()),
            changes: vec![ConnectionChange {
                old: None,
                new: Some(Connection::new("C2", "5001")),
            }],
        };
        // Already DNs and numbers: borrowed as it is.
        assert!(matches!(
            n.normalize_call(&bare_event, plan),
            Cow::Borrowed(_)
        ));
        let osv_event = CallEvent {
            connection: Connection::new("C1", "+49897004001"),
            device: Some("N<+49897004001>;displayNumber=4001".into()),
            other_device: Some("N<+17867100000>Line1;displayNumber=7867100000".into()),
            changes: vec![ConnectionChange {
                old: None,
                new: Some(Connection::new("C2", "N<+49897005001>;uid=FF00")),
            }],
            ..bare_event.clone()
        };
        let got = n.normalize_call(&osv_event, plan);
        assert!(matches!(got, Cow::Owned(_)));
        assert_eq!(got.into_owned(), bare_event);
        // notKnown: absent.
        let unknown = CallEvent {
            other_device: Some("notKnown".into()),
            ..bare_event.clone()
        };
        assert_eq!(n.normalize_call(&unknown, plan).other_device, None);
    }

    #[test]
    fn call_devices_are_what_other_dn_gives() {
        use crate::csta::CallEventKind;
        let plan = |d: &str| d == "4001" || d == "+49897004002";
        for n in [bare(), osv("+4989700", ""), osv("", "#")] {
            for raw in [
                "4001",
                "+49897004001",
                "+49897004002",
                "N<+49897004001>;noa=nk",
                "4001#",
                "<sip:4001@host>",
                "4001:CM1:10.0.0.1:0",
                " 4001 ",
                "notKnown",
                "+17865550100",
            ] {
                let ev = CallEvent {
                    kind: CallEventKind::Delivered,
                    cross_ref: None,
                    connection: Connection::new("C1", raw),
                    device: Some(raw.into()),
                    other_device: None,
                    cause: None,
                    changes: vec![],
                };
                let got = n.normalize_call(&ev, plan);
                let want = n.other_dn(raw, plan);
                assert_eq!(got.device, want, "{n:?} {raw:?}");
                assert_eq!(got.connection.device_id, want, "{n:?} {raw:?}");
            }
        }
    }

    #[test]
    fn other_dn_is_the_dn_or_the_number() {
        let plan = |d: &str| d == "4001";
        let n = osv("+4989700", "");
        assert_eq!(n.other_dn("N<+49897004001>", plan).unwrap(), "4001");
        assert_eq!(
            n.other_dn("N<+17867100000>;displayNumber=7867100000", plan)
                .unwrap(),
            "+17867100000"
        );
        assert_eq!(n.other_dn("<sip:5555@host>", plan).unwrap(), "5555");
        assert_eq!(n.other_dn("notKnown", plan), None);
    }
}
