//! `larder cluster status|add|remove`: the cluster as its leader sees it, and membership
//! changes.

use std::io::Write;

use clap::{Args, Subcommand};

use super::ConnArgs;

/// `larder cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Show the leader, its term, and each member's role, match index and lag (asked of
    /// any node: a follower forwards the question to the leader).
    Status(StatusArgs),
    /// Make a node a voting member: it is first brought up to date as a learner (start it
    /// first, with the members as its --peer list).
    Add(AddArgs),
    /// Take a node out of the voting members.
    Remove(RemoveArgs),
}

/// `larder cluster add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The new node's id.
    pub id: u64,
    /// Its cluster port (its --cluster-listen), HOST:PORT with an IP address.
    pub cluster_addr: std::net::SocketAddr,
}

/// `larder cluster remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The node's id.
    pub id: u64,
}

/// `larder cluster status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the `cluster-*` fields as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `cluster` subcommand.
pub async fn run(cmd: ClusterCmd, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status(args) => status(&args, out).await,
        ClusterCmd::Add(args) => {
            let cmd = crate::protocol::Command::ClusterAdd {
                id: args.id,
                addr: args.cluster_addr,
            };
            change(&args.conn, &cmd, out, &format!("node {} added", args.id)).await
        }
        ClusterCmd::Remove(args) => {
            let cmd = crate::protocol::Command::ClusterRemove(args.id);
            change(&args.conn, &cmd, out, &format!("node {} removed", args.id)).await
        }
    }
}

async fn change(
    conn: &ConnArgs,
    cmd: &crate::protocol::Command,
    out: &mut impl Write,
    done: &str,
) -> anyhow::Result<()> {
    use crate::protocol::Reply;
    let mut client = conn.connect().await?;
    match client.call(cmd).await? {
        Reply::ClusterChanged => {
            writeln!(out, "{done}")?;
            Ok(())
        }
        Reply::ClusterBusy => anyhow::bail!("another membership change is under way; try again"),
        Reply::NoQuorum => anyhow::bail!("the cluster has no leader (NO_QUORUM)"),
        Reply::NotFound => anyhow::bail!("no such member (or it is the last one)"),
        Reply::TimedOut => anyhow::bail!(
            "the node did not catch up within 60 s: is it running, with this address? It stays a non-voting learner"
        ),
        Reply::UnknownCommand => anyhow::bail!("{} is a single-node server", conn.addr),
        other => anyhow::bail!("unexpected reply: {other:?}"),
    }
}

async fn status(args: &StatusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let fields = super::summary::fetch(&args.conn, &args.conn.addr).await?;
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, _)| k.starts_with("cluster-"))
        .collect();
    if fields.is_empty() {
        anyhow::bail!(
            "{} is a single-node server (no cluster-* fields in its stats)",
            args.conn.addr
        );
    }
    if args.json {
        return super::stats::print_fields(fields, true, out);
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("-", |(_, v)| v.as_str())
    };
    writeln!(
        out,
        "leader {}, term {}, members {}; answered by node {} ({})",
        get("cluster-leader"),
        get("cluster-term"),
        get("cluster-members"),
        get("cluster-node"),
        get("cluster-role"),
    )?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["node", "role", "match index", "lag"]);
    let leader = get("cluster-leader");
    for id in get("cluster-members").split(',').filter(|s| !s.is_empty()) {
        if id == get("cluster-node") {
            table.add_row([id, get("cluster-role"), get("cluster-last-log-index"), "0"]);
            continue;
        }
        let role = if id == leader { "leader" } else { "follower" };
        table.add_row([
            id,
            role,
            get(&format!("cluster-node-{id}-match-index")),
            get(&format!("cluster-node-{id}-lag")),
        ]);
    }
    writeln!(out, "{table}")?;
    writeln!(
        out,
        "node {}: newest snapshot covers entries to {}, log purged to {}",
        get("cluster-node"),
        get("cluster-snapshot-index"),
        get("cluster-purged-index"),
    )?;
    Ok(())
}
