//! `mako client`: one-shot reads and writes, scans and scripted transactions against a
//! running deployment.

use std::io::BufRead;
use std::ops::Bound;
use std::path::PathBuf;

use anyhow::Context;
use mako_client::{Client, ClientConfig, ClientError, DEFAULT_TABLE, Operation, OperationResult};

/// Arguments of `mako client`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Config files of the deployment, merged in order.
    #[arg(short = 'f', long = "file", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Retry aborted transactions (conflicts, failover) up to this many attempts.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// What to do.
    #[command(subcommand)]
    pub op: ClientOp,
}

/// One client command.
#[derive(clap::Subcommand, Debug)]
pub enum ClientOp {
    /// Print the value of KEY (`(nil)` when absent).
    Get {
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete KEY.
    Del {
        /// The key.
        key: String,
    },
    /// Print the rows with FROM <= key < TO, in key order across shards.
    Scan {
        /// First key (inclusive).
        from: String,
        /// End key (exclusive).
        to: String,
        /// Most rows.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Run a script from stdin as one transaction: one operation per line,
    /// `get K`, `put K V`, `del K`, `add K N`, `scan FROM TO [LIMIT]`; `#` starts a comment.
    Txn,
}

/// Runs one client command; prints results on stdout.
pub fn run(args: &ClientArgs) -> anyhow::Result<()> {
    let cfg = crate::server::load(&args.files)?;
    let mut cc = ClientConfig::from_config(&cfg)?;
    cc.attempts = args.attempts.max(1);
    let mut c = Client::new(cc);
    match &args.op {
        ClientOp::Get { key } => match c.get(key.as_bytes())? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => println!("(nil)"),
        },
        ClientOp::Put { key, value } => {
            c.put(key.as_bytes(), value.as_bytes())?;
            println!("OK");
        }
        ClientOp::Del { key } => {
            c.delete(key.as_bytes())?;
            println!("OK");
        }
        ClientOp::Scan { from, to, limit } => {
            let rows = c.scan(
                Bound::Included(from.as_bytes()),
                Bound::Excluded(to.as_bytes()),
                *limit,
            )?;
            print_rows(&rows);
        }
        ClientOp::Txn => {
            let mut ops = Vec::new();
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.context("reading the script from stdin")?;
                if let Some(op) =
                    parse_line(&line).with_context(|| format!("script line {}", n + 1))?
                {
                    ops.push(op);
                }
            }
            if ops.is_empty() {
                anyhow::bail!("the script on stdin has no operation");
            }
            let results = c.run(ops.clone()).map_err(explain)?;
            for (op, r) in ops.iter().zip(results) {
                print_result(op, &r);
            }
            println!("COMMITTED");
        }
    }
    Ok(())
}

/// Adds what an outcome means to the error.
fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Aborted { .. } => anyhow::anyhow!("{e}: the transaction is not visible"),
        ClientError::Unknown(_) => {
            anyhow::anyhow!("{e}: the transaction may or may not have taken effect")
        }
        other => other.into(),
    }
}

/// One script line as an operation (`None` for blank lines and comments).
fn parse_line(line: &str) -> anyhow::Result<Option<Operation>> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let t = DEFAULT_TABLE.to_string();
    let key = |i: usize| -> anyhow::Result<Vec<u8>> {
        words
            .get(i)
            .map(|w| w.as_bytes().to_vec())
            .ok_or_else(|| anyhow::anyhow!("{:?}: missing argument {i}", words[0]))
    };
    let extra = |n: usize| -> anyhow::Result<()> {
        if words.len() > n {
            anyhow::bail!(
                "{:?} takes {} argument(s), got {}",
                words[0],
                n - 1,
                words.len() - 1
            )
        }
        Ok(())
    };
    Ok(Some(match words[0].to_ascii_lowercase().as_str() {
        "get" => {
            extra(2)?;
            Operation::Get {
                table: t,
                key: key(1)?,
            }
        }
        "put" | "set" => {
            extra(3)?;
            Operation::Put {
                table: t,
                key: key(1)?,
                value: key(2)?,
            }
        }
        "del" | "delete" => {
            extra(2)?;
            Operation::Delete {
                table: t,
                key: key(1)?,
            }
        }
        "add" => {
            extra(3)?;
            let delta = words
                .get(2)
                .ok_or_else(|| anyhow::anyhow!("add: missing amount"))?
                .parse()
                .context("add: the amount is not an integer")?;
            Operation::Add {
                table: t,
                key: key(1)?,
                delta,
            }
        }
        "scan" => {
            extra(4)?;
            let limit = match words.get(3) {
                Some(l) => l.parse().context("scan: the limit is not a number")?,
                None => 1000,
            };
            Operation::Scan {
                table: t,
                lo: Bound::Included(key(1)?),
                hi: Bound::Excluded(key(2)?),
                limit,
            }
        }
        other => anyhow::bail!("unknown operation {other:?} (get, put, del, add, scan)"),
    }))
}

fn print_result(op: &Operation, r: &OperationResult) {
    let key = op.key().map(|k| String::from_utf8_lossy(k).into_owned());
    match r {
        OperationResult::Value(Some(v)) => {
            println!(
                "{} = {}",
                key.unwrap_or_default(),
                String::from_utf8_lossy(v)
            )
        }
        OperationResult::Value(None) => println!("{} = (nil)", key.unwrap_or_default()),
        OperationResult::Done => println!("{} OK", key.unwrap_or_default()),
        OperationResult::Int(i) => println!("{} = {i}", key.unwrap_or_default()),
        OperationResult::Rows(rows) => print_rows(rows),
        OperationResult::Version(Some((epoch, ts))) => {
            println!("{} version {epoch}.{ts}", key.unwrap_or_default())
        }
        OperationResult::Version(None) => {
            println!("{} version (never written)", key.unwrap_or_default())
        }
    }
}

fn print_rows(rows: &[(Vec<u8>, Vec<u8>)]) {
    for (k, v) in rows {
        println!(
            "{}\t{}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        );
    }
    println!("({} rows)", rows.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lines_parse_and_bad_ones_are_named() {
        assert!(parse_line("  # comment").unwrap().is_none());
        assert!(matches!(
            parse_line("put a 1").unwrap(),
            Some(Operation::Put { .. })
        ));
        assert!(matches!(
            parse_line("ADD a -3").unwrap(),
            Some(Operation::Add { delta: -3, .. })
        ));
        assert!(matches!(
            parse_line("scan a z 5").unwrap(),
            Some(Operation::Scan { limit: 5, .. })
        ));
        assert!(
            parse_line("frob a")
                .unwrap_err()
                .to_string()
                .contains("unknown operation")
        );
        assert!(parse_line("get").is_err());
        assert!(parse_line("get a b").is_err());
        assert!(parse_line("add a x").is_err());
    }
}
