//! `mako status`: every site's view of its shard, as a table or JSON.

use std::path::PathBuf;
use std::time::Duration;

use mako_client::{Client, ClientConfig};

/// Arguments of `mako status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Config files of the deployment, merged in order.
    #[arg(short = 'f', long = "file", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Asks every site for its status and prints it; exits non-zero if any site is down.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let cfg = crate::server::load(&args.files)?;
    let mut cc = ClientConfig::from_config(&cfg)?;
    cc.connect_timeout = Duration::from_millis(500);
    cc.reply_timeout = Duration::from_secs(2);
    let mut c = Client::new(cc);
    let mut rows = Vec::new();
    let mut down = 0;
    for s in &cfg.sites {
        match c.status(&s.name) {
            Ok(st) => rows.push((s.name.clone(), s.shard, Ok(st))),
            Err(e) => {
                down += 1;
                rows.push((s.name.clone(), s.shard, Err(e.to_string())));
            }
        }
    }
    rows.sort_by_key(|(n, s, _)| (*s, n.clone()));
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, shard, st)| match st {
                Ok(st) => serde_json::json!({
                    "site": name, "shard": shard, "up": true, "node": st.node,
                    "role": st.role, "serving": st.serving, "health": st.health,
                    "term": st.term, "epoch": st.epoch, "commit_index": st.commit_index,
                    "applied_index": st.applied_index, "w": st.w, "vw": st.vw,
                    "queued": st.queued, "replayed": st.replayed, "leaders": st.leaders,
                    "released": st.released, "aborts": st.aborts, "uptime_s": st.uptime_s,
                }),
                Err(e) => {
                    serde_json::json!({"site": name, "shard": shard, "up": false, "error": e})
                }
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "durability": cfg.durability.to_string(),
                "shards": cfg.shards(), "replicas": cfg.replicas(), "sites": v,
            }))?
        );
    } else {
        println!(
            "{:<10} {:>5} {:<9} {:>7} {:>6} {:>6} {:>9} {:>9} {:>12} {:<27} {:>6}  health",
            "site",
            "shard",
            "role",
            "serving",
            "term",
            "epoch",
            "commit",
            "applied",
            "W_s",
            "VW",
            "queue"
        );
        for (name, shard, st) in &rows {
            match st {
                Ok(st) => println!(
                    "{:<10} {:>5} {:<9} {:>7} {:>6} {:>6} {:>9} {:>9} {:>12} {:<27} {:>6}  {}",
                    name,
                    shard,
                    st.role,
                    if st.serving { "yes" } else { "no" },
                    st.term,
                    st.epoch,
                    st.commit_index,
                    st.applied_index,
                    st.w,
                    format!("{:?}", st.vw),
                    st.queued,
                    st.health
                ),
                Err(e) => println!("{name:<10} {shard:>5} down      ({e})"),
            }
        }
        println!("durability: {}", cfg.durability);
    }
    if down > 0 {
        anyhow::bail!("{down} of {} sites did not answer", cfg.sites.len());
    }
    Ok(())
}
