//! The private services a client can request (README, "Client protocol v1", private services): the one
//! catalogue of what each is.
//!
//! For each service: its `privateMsgId` and name, its metrics label (also its name in audit
//! lines), the private event that reports the change it makes, the CSTA request that carries it
//! (README, "The CSTA link"), the switch's positive answer to that request, and the checks a request
//! must pass before anything is sent. Everything else that names a service (the extension
//! actor, metrics, audit lines, `EventServerConnected`) asks this module instead of matching
//! the numbers 1, 2 and 501 itself.

use crate::csta::{Connection, DeviceNaming, HotDeskAction, HotDeskRequest, Message};
use crate::protocol::ErrorCode;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A private service of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// 1: associate a guest extension with a host DN.
    HotdeskInitiate,
    /// 2: cancel the guest's association.
    HotdeskCancel,
    /// 501: set an account code on a call of the device.
    SetAccountCode,
}

/// The longest account code, in characters (1 to 32 printable characters, as the client protocol says).
pub const MAX_ACCOUNT_CODE_CHARS: usize = 32;

/// The extension key of private service 1 that names the host.
pub const HOST_DN: &str = "HOST_DN";

impl Service {
    /// Every service, in `privateMsgId` order (metrics export each at 0).
    pub const ALL: [Service; 3] = [
        Service::HotdeskInitiate,
        Service::HotdeskCancel,
        Service::SetAccountCode,
    ];

    /// The service of a `privateMsgId`, if the router has one.
    pub fn from_id(msg_id: u64) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| u64::from(s.id()) == msg_id)
    }

    /// Its `privateMsgId` (also the `privateMsgId` of the event reporting what it does).
    pub fn id(self) -> u32 {
        match self {
            Service::HotdeskInitiate => 1,
            Service::HotdeskCancel => 2,
            Service::SetAccountCode => 501,
        }
    }

    /// Its metrics label and audit name.
    pub fn label(self) -> &'static str {
        match self {
            Service::HotdeskInitiate => "hotdesk_initiate",
            Service::HotdeskCancel => "hotdesk_cancel",
            Service::SetAccountCode => "set_account_code",
        }
    }

    /// The metrics label of the private event that reports the change this service makes
    /// (`csta_router_private_events_total{event}`).
    pub fn event_label(self) -> &'static str {
        match self {
            Service::HotdeskInitiate => "hotdesk_established",
            Service::HotdeskCancel => "hotdesk_cancelled",
            Service::SetAccountCode => "account_code",
        }
    }

    /// The `operation` label of the association-latency histogram, for the hot-desk services.
    pub fn latency_operation(self) -> Option<&'static str> {
        match self {
            Service::HotdeskInitiate => Some("associate"),
            Service::HotdeskCancel => Some("cancel"),
            Service::SetAccountCode => None,
        }
    }

    /// Whether `answer` is the switch's positive answer to this service's request.
    pub fn accepts(self, answer: &Message) -> bool {
        match self {
            Service::HotdeskInitiate | Service::HotdeskCancel => {
                matches!(answer, Message::EscapeResponse)
            }
            Service::SetAccountCode => matches!(answer, Message::AssociateDataResponse),
        }
    }

    /// The services a router offers (`privateServices` of `EventServerConnected`): account
    /// codes only with `accode-privateservice = true`.
    pub fn offered(account_codes: bool) -> Vec<u32> {
        Service::ALL
            .into_iter()
            .filter(|s| account_codes || *s != Service::SetAccountCode)
            .map(Service::id)
            .collect()
    }
}

/// The name of a `privateMsgId` in audit lines: the service's label, or `private_<id>` for one
/// the router does not implement (so even those are audited, by number).
pub fn audit_name(msg_id: u64) -> Cow<'static, str> {
    match Service::from_id(msg_id) {
        Some(service) => Cow::Borrowed(service.label()),
        None => Cow::Owned(format!("private_{msg_id}")),
    }
}

/// A request refused before anything was sent: the code and a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code.
    pub code: ErrorCode,
    /// What is wrong, for a person.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// How the router's configuration shapes service 501.
#[derive(Debug, Clone, Copy)]
pub struct AccountCodes<'a> {
    /// `accode-privateservice`: whether service 501 is offered.
    pub enabled: bool,
    /// `accode-name`: the extension key that carries the code.
    pub name: &'a str,
}

/// What a request asks for, read from its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Params {
    /// Service 1: associate the guest with `host`.
    Associate {
        /// The host DN.
        host: String,
    },
    /// Service 2.
    Cancel,
    /// Service 501: set `code` on a call.
    AccountCode {
        /// The account code.
        code: String,
    },
}

/// Read and check the extensions of a request for `service` on `dn`: the checks that need
/// only the request and the configuration. Whether the host is on the guest's switch and
/// which call an account code goes to are the caller's to check, since they need its state.
pub fn read(
    service: Service,
    dn: &str,
    extensions: &BTreeMap<String, String>,
    account_codes: AccountCodes<'_>,
) -> Result<Params, Refusal> {
    match service {
        Service::HotdeskInitiate => {
            let Some(host) = extensions.get(HOST_DN) else {
                return Err(Refusal::new(
                    ErrorCode::InvalidAttr,
                    "Private service 1 needs extensions.HOST_DN: the host DN to associate the guest with.",
                ));
            };
            if host == dn {
                return Err(Refusal::new(
                    ErrorCode::InvalidAttr,
                    format!("HOST_DN {dn} is the guest itself; give the host device's DN."),
                ));
            }
            Ok(Params::Associate { host: host.clone() })
        }
        Service::HotdeskCancel => Ok(Params::Cancel),
        Service::SetAccountCode => {
            if !account_codes.enabled {
                return Err(Refusal::new(
                    ErrorCode::UnsupOper,
                    "Account codes (private service 501) are switched off on this router (accode-privateservice = false).",
                ));
            }
            let name = account_codes.name;
            let Some(code) = extensions.get(name) else {
                return Err(Refusal::new(
                    ErrorCode::InvalidAttr,
                    format!("Private service 501 needs extensions.{name}: the account code."),
                ));
            };
            if !valid_account_code(code) {
                return Err(Refusal::new(
                    ErrorCode::InvalidAttr,
                    format!(
                        "The account code must be 1 to {MAX_ACCOUNT_CODE_CHARS} printable characters; got {} characters.",
                        code.chars().count()
                    ),
                ));
            }
            Ok(Params::AccountCode { code: code.clone() })
        }
    }
}

/// 1 to [`MAX_ACCOUNT_CODE_CHARS`] printable characters.
fn valid_account_code(code: &str) -> bool {
    !code.is_empty()
        && code.chars().count() <= MAX_ACCOUNT_CODE_CHARS
        && code
            .chars()
            .all(|c| !c.is_control() && (c.is_alphanumeric() || c.is_ascii_graphic() || c == ' '))
}

/// The CSTA request that carries `params` for `dn` (README, "The CSTA link"); `call_id` is the switch's
/// ID of the call an account code goes to. Devices are written as the switch names them
/// (`naming`): hot-desk devices in its private-data form, the `AssociateData` device as the
/// bare number with prefix and suffix.
pub fn request(params: &Params, dn: &str, call_id: Option<&str>, naming: &DeviceNaming) -> Message {
    match params {
        Params::Associate { host } => Message::Escape(HotDeskRequest {
            guest: naming.private_device(dn),
            action: HotDeskAction::Associate {
                host: naming.private_device(host),
            },
        }),
        Params::Cancel => Message::Escape(HotDeskRequest {
            guest: naming.private_device(dn),
            action: HotDeskAction::Cancel,
        }),
        Params::AccountCode { code } => Message::AssociateData {
            call: Connection::new(call_id.unwrap_or_default(), naming.plain_device(dn)),
            account_code: code.clone(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CODES: AccountCodes<'static> = AccountCodes {
        enabled: true,
        name: "AccountCode",
    };

    fn ext(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ids_names_and_labels_are_the_spec_s() {
        let table: Vec<(u32, &str, &str)> = Service::ALL
            .iter()
            .map(|s| (s.id(), s.label(), s.event_label()))
            .collect();
        assert_eq!(
            table,
            [
                (1, "hotdesk_initiate", "hotdesk_established"),
                (2, "hotdesk_cancel", "hotdesk_cancelled"),
                (501, "set_account_code", "account_code"),
            ]
        );
        for s in Service::ALL {
            assert_eq!(Service::from_id(u64::from(s.id())), Some(s));
        }
        assert_eq!(Service::from_id(3), None);
        assert_eq!(audit_name(3), "private_3");
        assert_eq!(Service::offered(true), [1, 2, 501]);
        assert_eq!(Service::offered(false), [1, 2]);
    }

    #[test]
    fn each_service_accepts_only_its_positive_answer() {
        assert!(Service::HotdeskInitiate.accepts(&Message::EscapeResponse));
        assert!(Service::HotdeskCancel.accepts(&Message::EscapeResponse));
        assert!(!Service::HotdeskCancel.accepts(&Message::AssociateDataResponse));
        assert!(Service::SetAccountCode.accepts(&Message::AssociateDataResponse));
        assert!(!Service::SetAccountCode.accepts(&Message::EscapeResponse));
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let e = read(Service::HotdeskInitiate, "5001", &ext(&[]), CODES).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAttr);
        let e = read(
            Service::HotdeskInitiate,
            "5001",
            &ext(&[("HOST_DN", "5001")]),
            CODES,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAttr);
        assert_eq!(
            read(
                Service::HotdeskInitiate,
                "5001",
                &ext(&[("HOST_DN", "4001")]),
                CODES
            ),
            Ok(Params::Associate {
                host: "4001".into()
            })
        );
        assert_eq!(
            read(Service::HotdeskCancel, "5001", &ext(&[]), CODES),
            Ok(Params::Cancel)
        );
        let off = AccountCodes {
            enabled: false,
            ..CODES
        };
        let e = read(Service::SetAccountCode, "5001", &ext(&[]), off).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupOper);
        for bad in ["", "\u{7}", &"9".repeat(MAX_ACCOUNT_CODE_CHARS + 1)] {
            let e = read(
                Service::SetAccountCode,
                "5001",
                &ext(&[("AccountCode", bad)]),
                CODES,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAttr, "{bad:?}");
        }
        let longest = "9".repeat(MAX_ACCOUNT_CODE_CHARS);
        assert!(read(
            Service::SetAccountCode,
            "5001",
            &ext(&[("AccountCode", &longest)]),
            CODES
        )
        .is_ok());
    }

    #[test]
    fn the_csta_request_of_each_service() {
        assert_eq!(
            request(
                &Params::Associate {
                    host: "4001".into()
                },
                "5001",
                None,
                &DeviceNaming::default()
            ),
            Message::Escape(HotDeskRequest {
                guest: "5001".into(),
                action: HotDeskAction::Associate {
                    host: "4001".into()
                }
            })
        );
        assert_eq!(
            request(
                &Params::AccountCode {
                    code: "1234".into()
                },
                "5001",
                Some("C7"),
                &DeviceNaming::default()
            ),
            Message::AssociateData {
                call: Connection::new("C7", "5001"),
                account_code: "1234".into()
            }
        );
        // In an OpenScape Voice form with a prefix.
        let osv = DeviceNaming {
            form: crate::csta::DeviceForm::Osv,
            prefix: "+4989".into(),
            suffix: String::new(),
        };
        let host = Params::Associate {
            host: "4001".into(),
        };
        assert_eq!(
            request(&host, "5001", None, &osv),
            Message::Escape(HotDeskRequest {
                guest: "N<+49895001>".into(),
                action: HotDeskAction::Associate {
                    host: "N<+49894001>".into()
                }
            })
        );
        let code = Params::AccountCode {
            code: "1234".into(),
        };
        assert_eq!(
            request(&code, "5001", Some("C7"), &osv),
            Message::AssociateData {
                call: Connection::new("C7", "+49895001"),
                account_code: "1234".into()
            }
        );
    }
}
