//! Process wiring: start the embedded simulators, the switches and their links, and run until
//! SIGTERM or Ctrl-C.

use crate::config::Config;
use crate::link::{Switch, SwitchEvent, SwitchHandle};
use crate::sim::{SimConfig, Simulator};
use actix::prelude::*;
use tracing::{info, warn};

/// Why the router could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The runtime or a listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Logs link changes until the router actor exists to act on them.
struct LinkLog;

impl Actor for LinkLog {
    type Context = Context<Self>;
}

impl Handler<SwitchEvent> for LinkLog {
    type Result = ();

    fn handle(&mut self, ev: SwitchEvent, _: &mut Self::Context) {
        match ev {
            SwitchEvent::LinkUp { switch, link } => info!(%switch, link, "switch operational"),
            SwitchEvent::LinkDown { switch, link } => warn!(%switch, link, "switch lost its link"),
            _ => {}
        }
    }
}

/// Start everything the configuration describes and run until a termination signal.
pub fn run(config: Config) -> Result<(), ServerError> {
    let system = actix::System::new();
    system.block_on(async move {
        let mut sims = Vec::new();
        for sw in config.switch.iter().filter(|s| s.simulated) {
            let sim = Simulator::start(SimConfig {
                name: sw.name.clone(),
                dns: crate::dnplan::DnPlan::parse(&sw.dns).unwrap_or_default(),
                links: sw.link.iter().map(|l| l.address).collect(),
                control: sw.simulator_control,
                dialect: sw.dialect(),
            })
            .await?;
            warn!(
                switch = %sw.name,
                links = ?sim.link_addrs(),
                control = ?sim.control_addr(),
                "switch {} is SIMULATED (embedded pbx-sim): not a real PBX",
                sw.name
            );
            sims.push(sim);
        }
        let log = LinkLog.start().recipient();
        let arbiters: Vec<actix::ArbiterHandle> =
            (0..2).map(|_| actix::Arbiter::new().handle()).collect();
        let switches: Vec<SwitchHandle> = config
            .switch_configs()
            .into_iter()
            .map(|c| Switch::start(c, log.clone(), &arbiters))
            .collect();
        info!(switches = switches.len(), "csta-router running");
        shutdown_signal().await;
        info!("shutting down");
        for sim in &sims {
            sim.shutdown();
        }
        Ok::<(), ServerError>(())
    })?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
