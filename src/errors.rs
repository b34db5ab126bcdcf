//! How a switch's failures become client error codes (README, "Client protocol v1", errors).
//!
//! A request to a switch is either a private service or the MonitorStart of a registration
//! (`None` below): the same `CSTAErrorCode` means different things for them
//! (`stateIncompatibility` is "already associated" for service 1, "no association" for 2).

use crate::csta::CstaError;
use crate::link::LinkError;
use crate::protocol::ErrorCode;
use crate::services::Service;

/// The code for a `CSTAErrorCode` answer to `service`.
pub fn csta_error_code(e: &CstaError, service: Option<Service>) -> ErrorCode {
    let value = e.value.as_str();
    match e.canonical_category() {
        "stateIncompatibility" => match service {
            Some(Service::HotdeskInitiate) => ErrorCode::ResourceSeized,
            Some(Service::HotdeskCancel) => ErrorCode::InSameState,
            Some(Service::SetAccountCode) => ErrorCode::InvConnId,
            None => ErrorCode::UnknownError,
        },
        "operation" if matches!(value, "invalidDeviceID" | "objectNotKnown") => {
            ErrorCode::NotConfigured
        }
        "operation" if matches!(value, "invalidCallID" | "invalidConnectionID") => {
            ErrorCode::InvConnId
        }
        "operation" if value == "invalidAccountCode" => ErrorCode::InvalidAttr,
        _ if value.ends_with("OutOfService") => ErrorCode::OutOfService,
        "systemResourceAvailability" | "subscribedResourceAvailability"
            if value.ends_with("Busy") || value.ends_with("LimitExceeded") =>
        {
            ErrorCode::TooManyReq
        }
        "performanceManagement" => ErrorCode::TooManyReq,
        _ => ErrorCode::UnknownError,
    }
}

/// The code and a sentence for a person, for a failed request on `dn` (`service`: `None` for a
/// registration's MonitorStart).
pub fn link_error(e: &LinkError, service: Option<Service>, dn: &str) -> (ErrorCode, String) {
    match e {
        LinkError::NoSwitch { switch } => (
            ErrorCode::NoSwitch,
            format!("Switch {switch} has no operational CTI link, so the request was not sent; retry when EventLinkConnected arrives."),
        ),
        LinkError::LinkLost { switch } => (
            ErrorCode::NoSwitch,
            format!("The CTI link to switch {switch} was lost while the request was in flight; the switch may or may not have acted, so query {dn} before retrying."),
        ),
        LinkError::Timeout { switch, timeout } => (
            ErrorCode::Timeout,
            format!("Switch {switch} did not answer within {} ms; the switch may or may not have acted, so query {dn} before retrying.", timeout.as_millis()),
        ),
        LinkError::Overload { switch } => (
            ErrorCode::TooManyReq,
            format!("Too many requests are in flight on the CTI link to switch {switch}; retry shortly."),
        ),
        LinkError::BadAnswer { switch, detail } => (
            ErrorCode::UnknownError,
            format!("Switch {switch} answered with a message the router cannot read ({detail}); the switch may or may not have acted, so query {dn} before retrying."),
        ),
        LinkError::Rejected { switch, error } => {
            let code = csta_error_code(error, service);
            let what = match (code, service) {
                (ErrorCode::ResourceSeized, _) => format!("the guest {dn} or the host is already associated; cancel that association first"),
                (ErrorCode::InSameState, _) => format!("{dn} has no hot-desk association to cancel"),
                (ErrorCode::NotConfigured, _) => "the switch does not know the device; check the DN".to_owned(),
                (ErrorCode::InvConnId, _) => format!("the call is not (or no longer) at {dn}; query the address for its current calls"),
                (ErrorCode::InvalidAttr, _) => "the switch refused the account code; check its format".to_owned(),
                (ErrorCode::OutOfService, _) => "the device or a resource it needs is out of service; check the device on the switch".to_owned(),
                (ErrorCode::TooManyReq, _) => "the switch is overloaded or a monitor limit was reached; retry later or free resources".to_owned(),
                _ if error.category == "privateErrorCode" => format!("the switch gave the private error \"{}\"", error.value),
                _ => "the switch gave no more specific reason; see the CSTAError extension".to_owned(),
            };
            (
                code,
                format!("Switch {switch} rejected the request ({error}): {what}."),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(cat: &str, val: &str, s: impl Into<Option<Service>>) -> u32 {
        csta_error_code(&CstaError::new(cat, val), s.into()).code()
    }

    #[allow(non_upper_case_globals)]
    const Monitor: Option<Service> = None;

    #[test]
    fn mapping_table_of_the_spec() {
        use Service::*;
        assert_eq!(
            code(
                "stateIncompatibility",
                "invalidObjectState",
                HotdeskInitiate
            ),
            42
        );
        assert_eq!(
            code("stateIncompatibility", "invalidObjectState", HotdeskCancel),
            43
        );
        assert_eq!(code("stateIncompatibility", "x", SetAccountCode), 56);
        assert_eq!(code("operation", "invalidDeviceID", Monitor), 59);
        assert_eq!(code("operation", "objectNotKnown", HotdeskInitiate), 59);
        assert_eq!(code("operation", "invalidCallID", SetAccountCode), 56);
        assert_eq!(code("operation", "invalidConnectionID", SetAccountCode), 56);
        assert_eq!(code("operation", "invalidAccountCode", SetAccountCode), 53);
        assert_eq!(
            code(
                "systemResourceAvailability",
                "deviceOutOfService",
                HotdeskInitiate
            ),
            58
        );
        assert_eq!(
            code(
                "systemResourceAvailibility",
                "resourceBusy",
                HotdeskInitiate
            ),
            111
        );
        assert_eq!(
            code(
                "systemResourceAvailability",
                "resourceLimitExceeded",
                Monitor
            ),
            111
        );
        assert_eq!(
            code(
                "subscribedResourceAvailability",
                "objectMonitorLimitExceeded",
                Monitor
            ),
            111
        );
        assert_eq!(
            code("performanceManagement", "performanceLimitExceeded", Monitor),
            111
        );
        assert_eq!(code("unspecified", "unspecified", HotdeskCancel), 50);
        assert_eq!(
            code("privateErrorCode", "E42 guest locked", HotdeskCancel),
            50
        );
        assert_eq!(
            code("systemResourceAvailability", "generic", HotdeskCancel),
            50
        );
    }
}
