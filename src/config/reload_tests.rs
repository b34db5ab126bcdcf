#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config::sections::{AdminConfig, ClusterConfig};
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A deserializer that only records the field names a struct asks for: the keys the file may
/// hold, read from the structs themselves.
struct Fields<'a>(&'a mut Vec<&'static str>);

impl<'de> Deserializer<'de> for Fields<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(de::Error::custom("fields read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    let mut fields = Vec::new();
    let _ = T::deserialize(Fields(&mut fields));
    assert!(!fields.is_empty());
    fields
}

fn names<T>(keys: Vec<Key<T>>) -> Vec<&'static str> {
    keys.into_iter().map(|(name, _, _, _)| name).collect()
}

fn same_set(what: &str, mut from_struct: Vec<&str>, mut classified: Vec<&str>) {
    from_struct.sort();
    classified.sort();
    assert_eq!(
        from_struct, classified,
        "{what}: every key of the file must be classified in config/reload.rs (applied, restarts links, or restart-only)"
    );
}

#[test]
fn every_key_of_the_file_is_classified() {
    same_set("top level", fields_of::<Config>(), SECTIONS.to_vec());
    same_set(
        "[server]",
        fields_of::<ServerConfig>(),
        names(server_keys()),
    );
    same_set(
        "[options]",
        fields_of::<OptionsConfig>(),
        names(options_keys()),
    );
    same_set(
        "[[application]]",
        fields_of::<ApplicationConfig>(),
        names(application_keys()),
    );
    let mut switch = names(switch_keys());
    switch.extend_from_slice(SWITCH_IDENTITY_KEYS);
    same_set("[[switch]]", fields_of::<SwitchEntry>(), switch);
    same_set(
        "[[switch.link]]",
        fields_of::<LinkEntry>(),
        names(link_keys()),
    );
    // `[[admin]]` is compared whole, `[cluster]` too (every key restart-only): the keys the
    // diff compares are those of the structs' `Debug` forms, which list every field.
    assert_eq!(fields_of::<AdminConfig>(), ["name", "token"]);
    assert!(fields_of::<ClusterConfig>().len() >= 13);
}

const BASE: &str = r#"
[server]
client-listen = "127.0.0.1:7700"
[options]
request-timeout = "4s"
[[application]]
name = "desk"
token = "0123456789abcdef"
[[switch]]
name = "a"
dns = ["5000-5999", "6000"]
[[switch.link]]
address = "127.0.0.1:4001"
[[switch]]
name = "b"
dns = ["7000-7999"]
[[switch.link]]
address = "127.0.0.1:4002"
"#;

fn parse(text: &str) -> Config {
    Config::parse(text, "x.toml").unwrap()
}

fn diff_of(new: &str) -> Diff {
    diff(&parse(BASE), &parse(new))
}

#[test]
fn an_unchanged_file_changes_nothing() {
    let d = diff_of(BASE);
    assert_eq!(d, Diff::default());
    let json = serde_json::to_value(&d.changed).unwrap();
    for key in [
        "switchesAdded",
        "switchesRemoved",
        "dnRangesAdded",
        "dnRangesRemoved",
        "linksChanged",
        "applicationsChanged",
        "optionsChanged",
    ] {
        assert_eq!(json[key], serde_json::json!([]), "{key}: {json}");
    }
}

#[test]
fn ranges_added_and_removed() {
    let d = diff_of(&BASE.replace(r#"["5000-5999", "6000"]"#, r#"["5000-5999", "6100-6199"]"#));
    assert_eq!(
        d.changed.dn_ranges_added,
        [SwitchRange {
            switch: "a".into(),
            range: "6100-6199".into()
        }]
    );
    assert_eq!(d.changed.dn_ranges_removed[0].range, "6000");
    assert!(d.plan_changed("a") && !d.plan_changed("b"));
    assert!(d.relink.is_empty() && d.restart_required.is_empty());
    assert!(d.changed.links_changed.is_empty());
}

#[test]
fn switches_added_removed_and_renamed() {
    let d = diff_of(&BASE.replace("name = \"b\"", "name = \"c\""));
    assert_eq!(d.changed.switches_added, ["c"]);
    assert_eq!(d.changed.switches_removed, ["b"]);
    assert_eq!(d.changed.links_changed.len(), 2);
    assert!(d.restart_required.is_empty());
}

#[test]
fn link_affecting_keys_restart_the_links() {
    let d = diff_of(&BASE.replace("name = \"a\"\n", "name = \"a\"\ndevice-id-form = \"osv\"\n"));
    assert_eq!(d.relink, ["a"]);
    assert_eq!(
        d.changed.links_changed,
        [SwitchLink {
            switch: "a".into(),
            address: "127.0.0.1:4001".into()
        }]
    );
    let d = diff_of(&BASE.replace("127.0.0.1:4002", "127.0.0.1:4003"));
    assert_eq!(d.relink, ["b"]);
    let addresses: Vec<&str> = d
        .changed
        .links_changed
        .iter()
        .map(|l| l.address.as_str())
        .collect();
    assert!(
        addresses.contains(&"127.0.0.1:4002") && addresses.contains(&"127.0.0.1:4003"),
        "{addresses:?}"
    );
    let d = diff_of(
        &format!("{BASE}[options]\nlink-queue = 16\n")
            .replace("[options]\nrequest-timeout = \"4s\"\n", ""),
    );
    assert_eq!(d.relink, ["a", "b"]);
    assert_eq!(d.changed.options_changed, ["options.link-queue"]);
}

#[test]
fn restart_only_keys_are_listed_and_the_rest_applied() {
    let text = BASE
        .replace("127.0.0.1:7700", "127.0.0.1:7701")
        .replace("\"4s\"", "\"2s\"")
        .replace("name = \"b\"\n", "name = \"b\"\nsimulated = true\n");
    let d = diff_of(&text);
    assert_eq!(
        d.restart_required,
        ["server.client-listen", "switch[1].simulated"]
    );
    assert_eq!(d.changed.options_changed, ["options.request-timeout"]);
    let d = diff_of(&format!(
        "{BASE}[cluster]\nname = \"c\"\nnats = [\"nats://127.0.0.1:4222\"]\nnode = \"n1\"\n"
    ));
    assert_eq!(d.restart_required, ["cluster"]);
}

#[test]
fn applications_and_admins_by_name_secrets_never_shown() {
    let d = diff_of(&BASE.replace("0123456789abcdef", "fedcba9876543210"));
    assert_eq!(d.changed.applications_changed, ["desk"]);
    let d = diff_of(&format!(
        "{BASE}[[application]]\nname = \"wall\"\ntoken = \"wallboard-token-1\"\naccess = \"monitor\"\n"
    ));
    assert_eq!(d.changed.applications_changed, ["wall"]);
    let d = diff_of(&format!(
        "{BASE}[[admin]]\nname = \"ops\"\ntoken = \"admin-token-secret\"\n"
    ));
    assert_eq!(d.changed.options_changed, ["admin"]);
    assert!(!format!("{d:?}").contains("admin-token-secret"));
}

#[test]
fn admin_entries_are_checked_naming_the_key_and_the_file() {
    let e = Config::parse(
        &format!("{BASE}[[admin]]\nname = \"ops\"\ntoken = \"short\"\n"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x.toml") && e.contains("admin[0].token"), "{e}");
    assert!(!e.contains("short\""), "{e}");
    let e = Config::parse(
        &format!("{BASE}[[admin]]\nname = \"ops\"\ntokn = \"a-secret-value\"\n"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x.toml") && !e.contains("a-secret-value"), "{e}");
}
