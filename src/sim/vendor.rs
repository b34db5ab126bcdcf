//! Vendor presets of the simulator (`pbx-sim --vendor`, `simulator-vendor` on a simulated
//! `[[switch]]`): how a real switch of that make writes CSTA, so that the router is tested
//! against the shapes real switches send and not only against its own dialect.
//!
//! The simulator writes these forms itself, with plain string formatting, and reads the
//! router's forms back itself: it never uses the router's device naming, so router and
//! simulator cannot share one misreading.
//!
//! | preset | namespace | devices in events | cross-references | ECMA-354 sessions | greeting |
//! |---|---|---|---|---|---|
//! | `generic` | the configured dialect's | bare DN | `M<n>` | accepted | `SystemStatus enabled` |
//! | `osv` (OpenScape Voice) | ECMA-323 ed4 | `N<+1561555DN>;displayNumber=DN;noa=nk` | large numbers | accepted, optional | `SystemStatus normal` |
//! | `avaya` (AES/DMCC) | ECMA-323 ed3, Avaya private data | DMCC device ID `DN:CM1:192.0.2.10:0` | small integers | required | none |
//! | `zultys` (MX) | none | bare DN | numbers | not served | none |

use serde::Deserialize;

/// The ECMA-323 edition 4 namespace (OpenScape Voice).
pub const ED4_NAMESPACE: &str = "http://www.ecma-international.org/standards/ecma-323/csta/ed4";

/// The prefix the `osv` preset puts before each DN in its devices (its E.164 office code);
/// a router talking to it sets `dn-prefix` to this.
pub const OSV_PREFIX: &str = "+1561555";

/// The Avaya private-data namespace.
const AVAYA_NAMESPACE: &str = "http://www.avaya.com/csta";

/// A simulator preset (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// The simulator's own dialect, as configured.
    #[default]
    Generic,
    /// Unify OpenScape Voice.
    Osv,
    /// Avaya Aura AES (DMCC).
    Avaya,
    /// Zultys MX.
    Zultys,
}

impl std::str::FromStr for Vendor {
    type Err = String;

    fn from_str(s: &str) -> Result<Vendor, String> {
        match s {
            "generic" => Ok(Vendor::Generic),
            "osv" => Ok(Vendor::Osv),
            "avaya" => Ok(Vendor::Avaya),
            "zultys" => Ok(Vendor::Zultys),
            other => Err(format!(
                "{other:?} is not a simulator vendor (osv, avaya, zultys or generic)"
            )),
        }
    }
}

impl Vendor {
    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Generic => "generic",
            Vendor::Osv => "osv",
            Vendor::Avaya => "avaya",
            Vendor::Zultys => "zultys",
        }
    }

    /// The namespace the preset writes, `None` to keep the configured dialect's.
    pub fn namespace(self) -> Option<&'static str> {
        match self {
            Vendor::Generic => None,
            Vendor::Osv => Some(ED4_NAMESPACE),
            Vendor::Avaya => Some(crate::csta::dialect::CSTA_ED3_NAMESPACE),
            Vendor::Zultys => Some(""),
        }
    }

    /// Whether the switch serves CSTA only inside an ECMA-354 application session.
    pub fn requires_session(self) -> bool {
        self == Vendor::Avaya
    }

    /// Whether the switch answers ECMA-354 requests at all.
    pub fn serves_sessions(self) -> bool {
        self != Vendor::Zultys
    }

    /// The longest session the switch grants by default, seconds.
    pub fn session_cap(self) -> u32 {
        match self {
            Vendor::Osv => 600,
            _ => 180,
        }
    }

    /// The `systemStatus` sent on invoke 0000 when a link connects, if any.
    pub fn greeting(self) -> Option<&'static str> {
        match self {
            Vendor::Generic => Some("enabled"),
            Vendor::Osv => Some("normal"),
            Vendor::Avaya | Vendor::Zultys => None,
        }
    }

    /// The `n`-th monitor's cross-reference, as the switch makes them.
    pub fn cross_ref(self, n: u64) -> String {
        match self {
            Vendor::Generic => format!("M{n}"),
            Vendor::Osv => (1_136_370_000 + n).to_string(),
            Vendor::Avaya => n.to_string(),
            Vendor::Zultys => (7000 + n).to_string(),
        }
    }

    /// A device as the switch names it in an event's device elements.
    pub fn device(self, dn: &str) -> String {
        match self {
            Vendor::Osv => format!("N<{OSV_PREFIX}{dn}>;displayNumber={dn};noa=nk"),
            Vendor::Avaya => format!("{dn}:CM1:192.0.2.10:0"),
            _ => dn.to_owned(),
        }
    }

    /// A device as the switch names it inside hot-desk private data (`guestDevice`,
    /// `hostDevice`).
    pub fn private_device(self, dn: &str) -> String {
        match self {
            Vendor::Osv => format!("N<{OSV_PREFIX}{dn}>"),
            _ => dn.to_owned(),
        }
    }

    /// A device as the switch names it in a `connection/deviceID`.
    pub fn connection_device(self, dn: &str) -> String {
        match self {
            Vendor::Osv => format!("{OSV_PREFIX}{dn}"),
            _ => dn.to_owned(),
        }
    }

    /// The DN a device names, read the way this switch reads what a client writes: the text
    /// inside `N<…>` and the preset's prefix (with or without its `+`) taken off for `osv`;
    /// as is for the others.
    pub fn read_device(self, raw: &str) -> String {
        if self != Vendor::Osv {
            return raw.to_owned();
        }
        let inner = match raw.strip_prefix("N<").and_then(|r| r.split_once('>')) {
            Some((inner, _)) => inner,
            None => raw,
        };
        let digits = OSV_PREFIX.trim_start_matches('+');
        inner
            .strip_prefix(OSV_PREFIX)
            .or_else(|| inner.strip_prefix(digits))
            .unwrap_or(inner)
            .to_owned()
    }

    /// Shape a document as the switch writes it: Zultys declares no namespace at all, Avaya
    /// adds its private data to every event.
    pub fn shape(self, xml: String, event: bool) -> String {
        match self {
            Vendor::Zultys => xml.replacen(" xmlns=\"\"", "", 1),
            Vendor::Avaya if event => Vendor::decorate_event(xml),
            _ => xml,
        }
    }

    /// Avaya's private data, added to an event before its root closes.
    fn decorate_event(xml: String) -> String {
        let Some(at) = xml.rfind("</") else {
            return xml;
        };
        let private = format!(
            r#"<extensions><privateData><private><ns1:LucentV7 xmlns:ns1="{AVAYA_NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:LucentV7"><ns1:reason>none</ns1:reason></ns1:LucentV7></private></privateData></extensions>"#
        );
        let mut out = xml;
        out.insert_str(at, &private);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn osv_reads_back_every_form_a_client_writes() {
        let v = Vendor::Osv;
        assert_eq!(v.read_device("N<+15615555001>"), "5001");
        assert_eq!(v.read_device("N<+15615555001>;noa=nk"), "5001");
        assert_eq!(v.read_device("+15615555001"), "5001");
        assert_eq!(v.read_device("15615555001"), "5001");
        assert_eq!(v.read_device("5001"), "5001");
        assert_eq!(Vendor::Avaya.read_device("N<5001>"), "N<5001>");
    }

    #[test]
    fn osv_writes_devices_as_the_switch_does() {
        assert_eq!(
            Vendor::Osv.device("5001"),
            "N<+15615555001>;displayNumber=5001;noa=nk"
        );
        assert_eq!(Vendor::Osv.connection_device("5001"), "+15615555001");
        assert_eq!(Vendor::Zultys.device("5001"), "5001");
        assert_eq!(Vendor::Avaya.device("5001"), "5001:CM1:192.0.2.10:0");
        assert_eq!(Vendor::Osv.private_device("5001"), "N<+15615555001>");
    }

    #[test]
    fn avaya_events_carry_private_data_before_the_root_closes() {
        let xml = "<X xmlns=\"a\"><y>1</y></X>".to_owned();
        let out = Vendor::Avaya.shape(xml.clone(), true);
        assert!(
            out.starts_with("<X xmlns=\"a\"><y>1</y><extensions>"),
            "{out}"
        );
        assert!(out.ends_with("</extensions></X>"), "{out}");
        assert_eq!(Vendor::Avaya.shape(xml.clone(), false), xml);
        assert_eq!(Vendor::Osv.shape(xml.clone(), true), xml);
        assert_eq!(
            Vendor::Zultys.shape("<X xmlns=\"\"><y/></X>".into(), true),
            "<X><y/></X>"
        );
    }
}
