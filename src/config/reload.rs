//! What a reload changes (README, "Live reload"): the running configuration against the one
//! just read, without any IO. Every key of the file is classified here, so that none is
//! ignored silently: it is applied to the running router, it restarts the links of its switch
//! (the links then use the new value), or it needs a restart of the process and is listed in
//! the answer's `restartRequired`. A unit test fails when a key exists that this module does
//! not classify.

use super::sections::{ApplicationConfig, LinkEntry, OptionsConfig, ServerConfig, SwitchEntry};
use super::Config;
use serde::Serialize;

/// What a change of one key does to the running router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Applied at once (to connections and requests from now on, timers within a second).
    Applied,
    /// The switch's links are closed and opened again with the new value (registrations kept
    /// and monitored again).
    Links,
    /// Not applied: the process must be restarted (listen addresses, `[cluster]` identity,
    /// the embedded simulator).
    Restart,
}

/// Reads one key's value in a comparable form.
type Get<T> = fn(&T) -> String;

/// Puts the running value of one key back into the file just read (`new`, `old`): what a
/// reload does with a key that needs a restart.
type Keep<T> = fn(&mut T, &T);

/// One key of a section: its name in the file, what a change does, its value, and how to
/// keep the running value.
type Key<T> = (&'static str, Effect, Get<T>, Keep<T>);

macro_rules! key {
    ($ty:ty, $name:literal, $effect:ident, $field:ident) => {
        (
            $name,
            Effect::$effect,
            (|c: &$ty| format!("{:?}", c.$field)) as Get<$ty>,
            (|new: &mut $ty, old: &$ty| new.$field.clone_from(&old.$field)) as Keep<$ty>,
        )
    };
}

/// Every key of `[server]`. The listeners are bound at start, so their addresses, their TLS
/// and their connection bound need a restart; the rest is read when a connection opens.
pub fn server_keys() -> Vec<Key<ServerConfig>> {
    vec![
        key!(ServerConfig, "client-listen", Restart, client_listen),
        key!(ServerConfig, "metrics-listen", Restart, metrics_listen),
        key!(ServerConfig, "tls-cert", Restart, tls_cert),
        key!(ServerConfig, "tls-key", Restart, tls_key),
        key!(
            ServerConfig,
            "max-http-connections",
            Restart,
            max_http_connections
        ),
        // The console page is told where `/v1` is when the listeners are bound.
        key!(
            ServerConfig,
            "console-client-url",
            Restart,
            console_client_url
        ),
        key!(ServerConfig, "max-clients", Applied, max_clients),
        key!(ServerConfig, "client-queue", Applied, client_queue),
        key!(
            ServerConfig,
            "client-ping-interval",
            Applied,
            client_ping_interval
        ),
        key!(
            ServerConfig,
            "client-ping-tolerance",
            Applied,
            client_ping_tolerance
        ),
        key!(ServerConfig, "max-frame-size", Applied, max_frame_size),
        key!(
            ServerConfig,
            "client-max-in-flight",
            Applied,
            client_max_in_flight
        ),
        key!(ServerConfig, "open-timeout", Applied, open_timeout),
        key!(ServerConfig, "allowed-origins", Applied, allowed_origins),
        key!(ServerConfig, "session-linger", Applied, session_linger),
    ]
}

/// Every key of `[options]`. The link timers are handed to the running links; `link-queue`
/// sizes a link's read-ahead when it connects, so its links restart.
pub fn options_keys() -> Vec<Key<OptionsConfig>> {
    vec![
        key!(OptionsConfig, "accode-name", Applied, accode_name),
        key!(
            OptionsConfig,
            "accode-privateservice",
            Applied,
            accode_privateservice
        ),
        key!(OptionsConfig, "request-timeout", Applied, request_timeout),
        key!(OptionsConfig, "kpl-interval", Applied, kpl_interval),
        key!(OptionsConfig, "kpl-tolerance", Applied, kpl_tolerance),
        key!(OptionsConfig, "call-grace", Applied, call_grace),
        key!(
            OptionsConfig,
            "call-cleanup-idle",
            Applied,
            call_cleanup_idle
        ),
        key!(OptionsConfig, "max-calls-per-dn", Applied, max_calls_per_dn),
        key!(
            OptionsConfig,
            "max-calls-per-switch",
            Applied,
            max_calls_per_switch
        ),
        key!(OptionsConfig, "reconnect-min", Applied, reconnect_min),
        key!(OptionsConfig, "reconnect-max", Applied, reconnect_max),
        key!(OptionsConfig, "link-queue", Links, link_queue),
    ]
}

/// Every key of `[[application]]` (tokens are checked at `RequestOpen`: a client opened with
/// a token that is removed stays open).
pub fn application_keys() -> Vec<Key<ApplicationConfig>> {
    vec![
        key!(ApplicationConfig, "name", Applied, name),
        (
            "token",
            Effect::Applied,
            (|c: &ApplicationConfig| c.token.clone()) as Get<ApplicationConfig>,
            (|new: &mut ApplicationConfig, old: &ApplicationConfig| {
                new.token.clone_from(&old.token);
            }) as Keep<ApplicationConfig>,
        ),
        key!(ApplicationConfig, "access", Applied, access),
    ]
}

/// Every key of `[[switch]]` but `name` (a switch renamed is a switch removed and one added)
/// and `link` (see [`link_keys`]). The embedded simulator is started with the process; the
/// dialect, TLS, session and device naming are the links' own settings.
pub fn switch_keys() -> Vec<Key<SwitchEntry>> {
    vec![
        key!(SwitchEntry, "dns", Applied, dns),
        key!(SwitchEntry, "simulated", Restart, simulated),
        key!(SwitchEntry, "simulator-control", Restart, simulator_control),
        key!(SwitchEntry, "simulator-vendor", Restart, simulator_vendor),
        key!(
            SwitchEntry,
            "simulator-tls-cert",
            Restart,
            simulator_tls_cert
        ),
        key!(SwitchEntry, "simulator-tls-key", Restart, simulator_tls_key),
        key!(SwitchEntry, "csta-namespace", Links, csta_namespace),
        key!(SwitchEntry, "hotdesk-namespace", Links, hotdesk_namespace),
        key!(SwitchEntry, "escape-root", Links, escape_root),
        key!(SwitchEntry, "private-data", Links, private_data),
        key!(SwitchEntry, "accode-encoding", Links, accode_encoding),
        key!(SwitchEntry, "device-id-form", Links, device_id_form),
        key!(SwitchEntry, "dn-prefix", Links, dn_prefix),
        key!(SwitchEntry, "dn-suffix", Links, dn_suffix),
        key!(SwitchEntry, "wire-trace", Links, wire_trace),
        key!(SwitchEntry, "tls", Links, tls),
        key!(SwitchEntry, "tls-ca", Links, tls_ca),
        key!(SwitchEntry, "tls-server-name", Links, tls_server_name),
        key!(
            SwitchEntry,
            "tls-insecure-skip-verify",
            Links,
            tls_insecure_skip_verify
        ),
        key!(
            SwitchEntry,
            "application-session",
            Links,
            application_session
        ),
        key!(
            SwitchEntry,
            "session-application-id",
            Links,
            session_application_id
        ),
        key!(
            SwitchEntry,
            "session-protocol-version",
            Links,
            session_protocol_version
        ),
        key!(SwitchEntry, "session-duration", Links, session_duration),
        key!(SwitchEntry, "system-register", Links, system_register),
    ]
}

/// Every key of `[[switch.link]]`: a link added, removed or re-prioritized restarts the
/// switch's links (a simulated switch's links are the simulator's: a restart).
pub fn link_keys() -> Vec<Key<LinkEntry>> {
    vec![
        key!(LinkEntry, "address", Links, address),
        key!(LinkEntry, "priority", Links, priority),
    ]
}

/// Keys whose changes are handled by name rather than by value: a switch's `name` (rename =
/// remove + add) and its `link` table (see [`link_keys`]).
pub const SWITCH_IDENTITY_KEYS: &[&str] = &["name", "link"];

/// The sections of the file. `[cluster]` is the node's identity in its cluster: every key
/// of it needs a restart.
pub const SECTIONS: &[&str] = &[
    "server",
    "options",
    "application",
    "admin",
    "switch",
    "cluster",
];

/// A DN-plan entry of a switch, added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchRange {
    /// The switch.
    pub switch: String,
    /// The entry as written (`"5000-5999"`).
    pub range: String,
}

/// A link of a switch whose connection is restarted (or added, or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchLink {
    /// The switch.
    pub switch: String,
    /// The link's address.
    pub address: String,
}

/// The answer's `changed` object (SPEC §12): what the reload applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// Switches added (names).
    pub switches_added: Vec<String>,
    /// Switches removed (names).
    pub switches_removed: Vec<String>,
    /// DN-plan entries added.
    pub dn_ranges_added: Vec<SwitchRange>,
    /// DN-plan entries removed.
    pub dn_ranges_removed: Vec<SwitchRange>,
    /// Links restarted, added or removed.
    pub links_changed: Vec<SwitchLink>,
    /// Applications added, removed or changed (names).
    pub applications_changed: Vec<String>,
    /// Applied keys of `[server]`, `[options]` and `[[admin]]` (dotted paths).
    pub options_changed: Vec<String>,
}

/// The whole comparison: the answer's parts, and what the router must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// The answer's `changed`.
    pub changed: Changes,
    /// Keys not applied (dotted TOML paths), the answer's `restartRequired`.
    pub restart_required: Vec<String>,
    /// Switches (in both files) whose links restart with the new settings.
    pub relink: Vec<String>,
}

impl Diff {
    /// Whether the switch's plan changed (entries added or removed).
    pub fn plan_changed(&self, switch: &str) -> bool {
        let c = &self.changed;
        c.dn_ranges_added
            .iter()
            .chain(&c.dn_ranges_removed)
            .any(|r| r.switch == switch)
    }
}

/// Put the running value of every key that needs a restart back into the file just read, so
/// that what runs after the reload is what the answer says: those keys are listed in
/// `restartRequired`, not applied.
pub fn keep_restart_only(old: &Config, new: &mut Config) {
    keep(&server_keys(), &mut new.server, &old.server);
    // Loaded at start from `tls-cert`/`tls-key`.
    new.server.tls_config.clone_from(&old.server.tls_config);
    new.cluster.clone_from(&old.cluster);
    for sw in &mut new.switch {
        let Some(o) = old.switch.iter().find(|o| o.name == sw.name) else {
            continue;
        };
        keep(&switch_keys(), sw, o);
        // Loaded at start from `simulator-tls-cert`/`-key`.
        sw.simulator_tls.clone_from(&o.simulator_tls);
        // An embedded simulator keeps the addresses it was started on.
        if o.simulated {
            sw.link.clone_from(&o.link);
        }
    }
}

/// Keep the running value of each key of `keys` that needs a restart.
fn keep<T>(keys: &[Key<T>], new: &mut T, old: &T) {
    for (_, effect, _, keep) in keys {
        if *effect == Effect::Restart {
            keep(new, old);
        }
    }
}

/// Compare the running configuration with the one just read.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut d = Diff::default();
    for (name, effect, get, _) in server_keys() {
        changed_key(
            &mut d,
            "server",
            name,
            effect,
            get(&old.server) != get(&new.server),
        );
    }
    for (name, effect, get, _) in options_keys() {
        let changed = get(&old.options) != get(&new.options);
        changed_key(&mut d, "options", name, effect, changed);
        if changed && effect == Effect::Links {
            d.relink.extend(old.switch.iter().map(|s| s.name.clone()));
        }
    }
    applications(&mut d, &old.application, &new.application);
    let admins = |c: &Config| -> Vec<(String, String)> {
        c.admin
            .iter()
            .map(|a| (a.name.clone(), a.token.expose().to_owned()))
            .collect()
    };
    if admins(old) != admins(new) {
        d.changed.options_changed.push("admin".into());
    }
    cluster(&mut d, old, new);
    switches(&mut d, old, new);
    d.relink.sort();
    d.relink.dedup();
    for s in &d.relink {
        let Some(sw) = new.switch.iter().find(|n| &n.name == s) else {
            continue;
        };
        for l in &sw.link {
            let link = SwitchLink {
                switch: s.clone(),
                address: l.address.to_string(),
            };
            if !d.changed.links_changed.contains(&link) {
                d.changed.links_changed.push(link);
            }
        }
    }
    d
}

/// Note one key of a section that is the same in every file (`[server]`, `[options]`).
fn changed_key(d: &mut Diff, section: &str, name: &str, effect: Effect, changed: bool) {
    if !changed {
        return;
    }
    let path = format!("{section}.{name}");
    match effect {
        Effect::Restart => d.restart_required.push(path),
        Effect::Applied | Effect::Links => d.changed.options_changed.push(path),
    }
}

/// Applications added, removed or changed, by name.
fn applications(d: &mut Diff, old: &[ApplicationConfig], new: &[ApplicationConfig]) {
    let values = |a: &ApplicationConfig| -> Vec<String> {
        application_keys()
            .iter()
            .map(|(_, _, get, _)| get(a))
            .collect()
    };
    let mut names: Vec<&String> = old.iter().chain(new).map(|a| &a.name).collect();
    names.sort();
    names.dedup();
    for name in names {
        let o: Vec<Vec<String>> = old.iter().filter(|a| &a.name == name).map(values).collect();
        let n: Vec<Vec<String>> = new.iter().filter(|a| &a.name == name).map(values).collect();
        if o != n {
            d.changed.applications_changed.push(name.clone());
        }
    }
}

/// `[cluster]`: any change needs a restart.
fn cluster(d: &mut Diff, old: &Config, new: &Config) {
    match (&old.cluster, &new.cluster) {
        (None, None) => {}
        (Some(o), Some(n)) => {
            // Compared through the whole section's form, secrets included (never printed).
            let form = |c: &super::ClusterConfig| {
                let secret = |s: &Option<super::Secret>| s.as_ref().map(|s| s.expose().to_owned());
                format!(
                    "{:?}{:?}{:?}",
                    c,
                    secret(&c.nats_token),
                    secret(&c.nats_password)
                )
            };
            if form(o) != form(n) {
                d.restart_required.push("cluster".into());
            }
        }
        _ => d.restart_required.push("cluster".into()),
    }
}

/// Switches matched by name: added, removed, their plans and their links.
fn switches(d: &mut Diff, old: &Config, new: &Config) {
    for (i, n) in new.switch.iter().enumerate() {
        match old.switch.iter().find(|o| o.name == n.name) {
            Some(o) => same_switch(d, i, o, n),
            None if n.simulated => d.restart_required.push(format!("switch[{i}].simulated")),
            None => {
                d.changed.switches_added.push(n.name.clone());
                for l in &n.link {
                    d.changed.links_changed.push(SwitchLink {
                        switch: n.name.clone(),
                        address: l.address.to_string(),
                    });
                }
            }
        }
    }
    for (i, o) in old.switch.iter().enumerate() {
        if new.switch.iter().any(|n| n.name == o.name) {
            continue;
        }
        if o.simulated {
            d.restart_required.push(format!("switch[{i}].simulated"));
            continue;
        }
        d.changed.switches_removed.push(o.name.clone());
        for l in &o.link {
            d.changed.links_changed.push(SwitchLink {
                switch: o.name.clone(),
                address: l.address.to_string(),
            });
        }
    }
}

/// One switch in both files (`i`: its place in the new one).
fn same_switch(d: &mut Diff, i: usize, o: &SwitchEntry, n: &SwitchEntry) {
    let name = &n.name;
    let entries = |s: &SwitchEntry| -> Vec<String> {
        crate::dnplan::DnPlan::parse(&s.dns)
            .map(|p| p.entries.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    let (before, after) = (entries(o), entries(n));
    for e in after.iter().filter(|e| !before.contains(e)) {
        d.changed.dn_ranges_added.push(SwitchRange {
            switch: name.clone(),
            range: e.clone(),
        });
    }
    for e in before.iter().filter(|e| !after.contains(e)) {
        d.changed.dn_ranges_removed.push(SwitchRange {
            switch: name.clone(),
            range: e.clone(),
        });
    }
    for (key, effect, get, _) in switch_keys() {
        if key == "dns" || get(o) == get(n) {
            continue;
        }
        match effect {
            Effect::Restart => d.restart_required.push(format!("switch[{i}].{key}")),
            Effect::Links => d.relink.push(name.clone()),
            Effect::Applied => {}
        }
    }
    let links = |s: &SwitchEntry| -> Vec<Vec<String>> {
        s.link
            .iter()
            .map(|l| link_keys().iter().map(|(_, _, get, _)| get(l)).collect())
            .collect()
    };
    if links(o) == links(n) {
        return;
    }
    if n.simulated || o.simulated {
        d.restart_required.push(format!("switch[{i}].link"));
        return;
    }
    let addresses =
        |s: &SwitchEntry| -> Vec<String> { s.link.iter().map(|l| l.address.to_string()).collect() };
    let (before, after) = (addresses(o), addresses(n));
    for gone in before.iter().filter(|a| !after.contains(a)) {
        d.changed.links_changed.push(SwitchLink {
            switch: name.clone(),
            address: gone.clone(),
        });
    }
    d.relink.push(name.clone());
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
