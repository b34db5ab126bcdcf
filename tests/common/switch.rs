//! The link layer in a test: a [`Switch`] with its link actors started on given addresses,
//! its events forwarded to a channel the test reads (and may hold, as a slow router would),
//! the link settings tests use, and the hot-desk requests they send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use actix::prelude::*;
use csta_router::config::Config;
use csta_router::csta::{Dialect, HotDeskAction, HotDeskRequest, Message};
use csta_router::link::{
    LinkConfig, LinkSettings, Switch, SwitchConfig, SwitchEvent, SwitchHandle,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Forwards switch events to the test.
pub struct Collector(pub mpsc::UnboundedSender<SwitchEvent>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<SwitchEvent> for Collector {
    type Result = ();
    fn handle(&mut self, ev: SwitchEvent, _: &mut Self::Context) {
        let _ = self.0.send(ev);
    }
}

/// Start switch `name` with one link per address (priorities 1, 2, ... in that order); its
/// events arrive on the returned channel.
pub fn start_switch(
    name: &str,
    addresses: Vec<SocketAddr>,
    dialect: Dialect,
    settings: LinkSettings,
) -> (SwitchHandle, mpsc::UnboundedReceiver<SwitchEvent>) {
    let (tx, events) = mpsc::unbounded_channel();
    let links = addresses
        .into_iter()
        .enumerate()
        .map(|(i, address)| LinkConfig {
            address,
            priority: i as u32 + 1,
        })
        .collect();
    let config = SwitchConfig {
        name: name.into(),
        links,
        dialect,
        settings,
    };
    let switch = Switch::start(config, Collector(tx).start().recipient(), &[]);
    (switch, events)
}

/// Link settings for tests: this request timeout and keep-alive, quick reconnects.
pub fn settings(
    request_timeout: Duration,
    kpl_interval: Duration,
    kpl_tolerance: u32,
) -> LinkSettings {
    LinkSettings {
        request_timeout,
        kpl_interval,
        kpl_tolerance,
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        ..LinkSettings::default()
    }
}

/// The second dialect of the end-to-end suites (`SECOND_DIALECT`), as a switch reads it from
/// its configuration.
pub fn second_dialect() -> Dialect {
    let text = format!(
        "[[switch]]\nname = \"sw\"\ndns = [\"5000\"]\n{}\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n",
        super::router::SECOND_DIALECT
    );
    let config = Config::parse(&text, "second dialect").unwrap();
    config.switch_configs()[0].dialect.clone()
}

/// Skip events until one matches `pred` (within `within`, else the test fails naming `what`).
pub async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<SwitchEvent>,
    within: Duration,
    what: &str,
    pred: impl Fn(&SwitchEvent) -> bool,
) -> SwitchEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(_)) => continue,
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

/// Wait (5 s at most) for a link of the switch to come up.
pub async fn link_up(events: &mut mpsc::UnboundedReceiver<SwitchEvent>) {
    wait_for(events, Duration::from_secs(5), "LinkUp", |e| {
        matches!(e, SwitchEvent::LinkUp { .. })
    })
    .await;
}

/// Wait (5 s at most) for the switch's link to go down.
pub async fn link_down(events: &mut mpsc::UnboundedReceiver<SwitchEvent>) {
    wait_for(events, Duration::from_secs(5), "LinkDown", |e| {
        matches!(e, SwitchEvent::LinkDown { .. })
    })
    .await;
}

/// Private service 1: associate `guest` with `host`.
pub fn associate(guest: &str, host: &str) -> Message {
    Message::Escape(HotDeskRequest {
        guest: guest.into(),
        action: HotDeskAction::Associate { host: host.into() },
    })
}

/// Private service 2: cancel `guest`'s association.
pub fn cancel(guest: &str) -> Message {
    Message::Escape(HotDeskRequest {
        guest: guest.into(),
        action: HotDeskAction::Cancel,
    })
}
