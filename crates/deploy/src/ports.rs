//! Ports for local deployments that no other test or OS-assigned socket can take meanwhile.
//!
//! A port chosen by binding port 0 and closing the socket is free only until someone else
//! binds: the OS hands the same port to the next process that asks for any port, and a
//! server started a moment later then fails with "Address already in use". Ports handed out
//! here come instead from a pool *outside* the OS's ephemeral range (so no socket bound to
//! port 0 and no outgoing connection gets them), in blocks that one process at a time owns.
//! A process owns a block by listening on its first port, which it keeps (and never hands
//! out) until it exits: the lock is as wide as the ports it guards (one network namespace),
//! needs no file, and the OS drops it with the process. A block is taken only if all its
//! other ports can be bound at that moment. If the ephemeral range leaves no room for a
//! pool, ports are chosen by binding port 0, as a last resort.

use std::io;
use std::net::TcpListener;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// Ports per block, its lock port included.
const BLOCK: u16 = 64;

/// Ports of the pool, at most (the pool sits just below the ephemeral range).
const POOL: u16 = 12 * 1024;

/// The ports owned by this process and not handed out yet, and the locks that own them.
struct Owned {
    free: Range<u16>,
    locks: Vec<TcpListener>,
}

static OWNED: Mutex<Owned> = Mutex::new(Owned {
    free: 0..0,
    locks: Vec::new(),
});

fn owned() -> MutexGuard<'static, Owned> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// `n` distinct ports on 127.0.0.1 that this process owns until it exits (or, with no room
/// for a pool, ports free now: see the module documentation).
pub fn reserve(n: usize) -> io::Result<Vec<u16>> {
    let mut out = Vec::with_capacity(n);
    loop {
        {
            let mut owned = owned();
            while out.len() < n {
                match owned.free.next() {
                    Some(p) => out.push(p),
                    None => break,
                }
            }
        }
        if out.len() == n {
            return Ok(out);
        }
        // Taken without holding `OWNED` (it binds sockets); two threads taking blocks at
        // once cannot both listen on one block's first port.
        let Some(pool) = pool() else {
            out.extend(any_free(n - out.len())?);
            return Ok(out);
        };
        let (block, lock) = take_block(pool)?;
        let mut owned = owned();
        owned.locks.push(lock);
        if owned.free.is_empty() {
            owned.free = block;
        } else {
            // Another thread refilled meanwhile: use this block's ports first.
            out.extend(block.take(n - out.len()));
        }
    }
}

/// The pool's port range: below the ephemeral range if there is room, else above it;
/// `None` if the ephemeral range leaves no room on either side.
fn pool() -> Option<Range<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let pool = pool_for(&text);
    (pool.len() >= usize::from(BLOCK)).then_some(pool)
}

/// `n` ports free now, chosen by the OS (another socket may take one before it is bound).
fn any_free(n: usize) -> io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The pool for an `ip_local_port_range` text (`"LOW HIGH"`); empty if it leaves no room.
fn pool_for(range_text: &str) -> Range<u16> {
    let mut it = range_text.split_whitespace().map(|s| s.parse::<u16>().ok());
    let (Some(Some(low)), Some(Some(high))) = (it.next(), it.next()) else {
        return 0..0;
    };
    let below = low.saturating_sub(POOL).max(1024)..low;
    if below.len() >= usize::from(BLOCK) {
        return below;
    }
    let above_start = high.saturating_add(1);
    above_start..above_start.saturating_add(POOL)
}

/// Locks a block of the pool that no other process holds and whose ports all bind now:
/// the ports after its first, and the listener on its first that owns it.
fn take_block(pool: Range<u16>) -> io::Result<(Range<u16>, TcpListener)> {
    let blocks = pool.len() / usize::from(BLOCK);
    for b in 0..blocks {
        let first = pool.start + (b as u16) * BLOCK;
        let Ok(lock) = TcpListener::bind(("127.0.0.1", first)) else {
            continue; // another process owns it (or something else uses that port)
        };
        let ports = first + 1..first + BLOCK;
        if ports
            .clone()
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return Ok((ports, lock));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every block of ports {pool:?} is taken"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_lies_outside_the_ephemeral_range() {
        assert_eq!(pool_for("32768\t60999\n"), 20480..32768);
        assert_eq!(pool_for("2000 60999"), 1024..2000);
        assert_eq!(pool_for("1050 60999"), 61000..65535);
        assert!(pool_for("1024 65535").is_empty());
        assert!(pool_for("garbage").is_empty());
    }

    #[test]
    fn reserved_ports_are_distinct_and_bindable() {
        let a = reserve(100).unwrap();
        let b = reserve(3).unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 103);
        for p in all {
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
