//! `operator root keyring list|rotate`: the servers' root keys, as
//! Nomad's commands show them (key IDs shortened unless `-verbose`).

use clap::Subcommand;

use super::api::ApiClient;
use super::format::list;
use crate::structs::RootKeyMeta;
use crate::util::{rfc3339, short_id};

/// The `operator` subcommands berth has.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// The servers' root keys.
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
}

/// `operator root …`.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Lists or rotates the root keys that encrypt Variables and sign workload identities.
    Keyring {
        #[command(subcommand)]
        command: KeyringCommand,
    },
}

/// `operator root keyring …`.
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Lists the root keys.
    List {
        /// Full key IDs.
        #[arg(long)]
        verbose: bool,
    },
    /// Makes a new active root key.
    Rotate {
        /// Also re-encrypt every variable with the new key now.
        #[arg(long)]
        full: bool,
        /// Full key IDs.
        #[arg(long)]
        verbose: bool,
    },
}

fn table(keys: &[RootKeyMeta], verbose: bool) -> String {
    let mut rows = vec!["Key|State|Create Time".to_string()];
    for k in keys {
        let id = if verbose { k.key_id.as_str() } else { short_id(&k.key_id) };
        rows.push(format!("{id}|{}|{}", k.state, rfc3339(k.create_time)));
    }
    list(&rows)
}

/// Runs one `operator` subcommand; returns the exit code.
pub async fn run(api: &ApiClient, command: OperatorCommand) -> i32 {
    let OperatorCommand::Root { command: RootCommand::Keyring { command } } = command;
    match command {
        KeyringCommand::List { verbose } => match api.get::<Vec<RootKeyMeta>>("/v1/operator/keyring/keys").await {
            Ok(keys) => {
                println!("{}", table(&keys, verbose));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        KeyringCommand::Rotate { full, verbose } => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Rotated {
                key: RootKeyMeta,
            }
            let path = if full { "/v1/operator/keyring/rotate?full=true" } else { "/v1/operator/keyring/rotate" };
            match api.put::<_, Rotated>(path, &serde_json::json!({})).await {
                Ok(r) => {
                    println!("{}", table(&[r.key], verbose));
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
    }
}
