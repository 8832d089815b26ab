//! `cargo xtask mgmt ...`: the management server's commands (parsed here so that
//! `xtask.rs` only routes to them).

use std::net::SocketAddr;
use std::path::PathBuf;

use bulkhead_policy::bundle::signing::SecretKey;
use clap::Subcommand;

use super::key::{hex, read_secret_key, write_secret_key};
use super::server::{ServerConfig, start, system_clock};
use super::store::{Store, status_text};

#[derive(Debug, Subcommand)]
pub enum MgmtCmd {
    /// Answer laptops' check-ins (POST /v1/checkin) until stopped with Ctrl-C.
    ///
    /// Each answer is signed with the server key and carries the newest bundle
    /// published for the laptop (its own, else its group's) when it runs an older one.
    Serve {
        /// State directory: published bundles and the check-in log (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Address and port to listen on; laptops reach it as the policy's
        /// `[management] server`.
        #[arg(long, default_value = "0.0.0.0:8470")]
        listen: SocketAddr,
        /// The server's secret key (`cargo xtask mgmt keygen`); its public half is the
        /// policy's `[management] server_key`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Publish a signed bundle: laptops get it at their next check-in.
    ///
    /// The bundle goes to the target its policy names (`target = "group:NAME"` or a
    /// device id); it must be newer than the bundle already published there.
    Publish {
        /// The bundle (`cargo xtask policy sign`).
        bundle: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
    /// List the laptops that checked in: group, policy version, last check-in.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make a server key and print its public half for the policy's `server_key`.
    Keygen {
        /// Where to write the secret key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: MgmtCmd) -> Result<(), String> {
    match cmd {
        MgmtCmd::Serve { dir, listen, key } => {
            let key = read_secret_key(&key)?;
            let public = hex(&key.public());
            let server = start(ServerConfig { dir: dir.clone(), listen, key, clock: system_clock, announce: true })?;
            eprintln!("    Serving check-ins on http://{}/v1/checkin (state in {})", server.addr, dir.display());
            eprintln!("    Server key {public}: the policy's [management] server_key must be this");
            server.wait();
            Ok(())
        }
        MgmtCmd::Publish { bundle, dir } => {
            let bytes = std::fs::read(&bundle).map_err(|e| format!("cannot read {}: {e}", bundle.display()))?;
            let store = Store::open(&dir)?;
            let (target, version) =
                store.publish(&bytes).map_err(|e| format!("{} not published: {e}", bundle.display()))?;
            eprintln!("    Published v{version} for {target}; laptops get it at their next check-in");
            Ok(())
        }
        MgmtCmd::Status { dir } => {
            let log = Store::open(&dir)?.load_log()?;
            print!("{}", status_text(&log, system_clock()));
            Ok(())
        }
        MgmtCmd::Keygen { out } => {
            let key = SecretKey::generate();
            write_secret_key(&out, &key)?;
            eprintln!("    Wrote {} (keep it secret)", out.display());
            println!("server_key = \"{}\"", hex(&key.public()));
            Ok(())
        }
    }
}
