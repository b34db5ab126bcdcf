//! The machine-readable description of client protocol v1 (README, "Protocol description
//! (AsyncAPI)"): an AsyncAPI 3.0.0 document with a JSON Schema for every request, reply and
//! event, served at `GET /asyncapi.json` on `metrics-listen`.
//!
//! Why in the binary: a client author (or a code generator) gets the description of exactly
//! the protocol the running router speaks, from the router itself, with no file to ship beside
//! it. The document is written by hand in `asyncapi.json` next to the codec it describes, and
//! `tests/asyncapi.rs` validates every message a scripted session makes the router send (and
//! every protocol example of the README) against it, so it cannot drift from the code unseen.

use actix_web::HttpResponse;

/// The AsyncAPI 3.0.0 document of client protocol v1, as served.
pub const ASYNCAPI_JSON: &str = include_str!("asyncapi.json");

/// `GET /asyncapi.json`: the document, as `application/json`. Why a constant body: the
/// document describes the protocol of this build, not of a configuration, so every router of
/// one version serves the same bytes (cacheable, comparable across nodes).
pub async fn endpoint() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ASYNCAPI_JSON)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Whether no `$ref` in `v` has sibling keywords (JSON Schema draft 7, which AsyncAPI
    /// schemas extend, ignores them; 2020-12 applies them: the two would read it differently).
    fn no_ref_with_siblings(v: &Value) -> bool {
        match v {
            Value::Object(map) => {
                !(map.contains_key("$ref") && map.len() > 1)
                    && map.values().all(no_ref_with_siblings)
            }
            Value::Array(items) => items.iter().all(no_ref_with_siblings),
            _ => true,
        }
    }

    #[test]
    fn the_document_is_asyncapi_3_json_and_each_message_names_itself() {
        let doc: Value = serde_json::from_str(ASYNCAPI_JSON).unwrap();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["channels"]["v1"]["address"], "/v1");
        assert!(no_ref_with_siblings(&doc), "a $ref with siblings");
        let messages = doc["components"]["messages"].as_object().unwrap();
        assert!(messages.len() >= 30, "{} messages", messages.len());
        for (key, m) in messages {
            // The payload's `message` const is the wire name the message is chosen by.
            let payload = &m["payload"];
            assert_eq!(
                payload["properties"]["message"]["const"], m["name"],
                "{key}"
            );
            assert!(payload["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from("message")));
            assert!(payload.get("additionalProperties").is_none(), "{key}");
            // Every component is on the channel.
            assert_eq!(
                doc["channels"]["v1"]["messages"][key]["$ref"],
                format!("#/components/messages/{key}")
            );
        }
    }
}
