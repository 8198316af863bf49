//! A TCP proxy between a deployment's sites, to cut and heal peer links in tests.
//!
//! [`PeerProxy::start`] listens on every site's configured (advertised) peer address and
//! forwards each connection to the site's private address, which the site listens on
//! instead (`mako server --peer-listen ADDR`, see [`PeerProxy::peer_listen_args`]). The
//! proxy reads the first frame of each connection, the peer hello (4-byte big-endian
//! length, then `MKT` and a version byte, the sender's node id and the receiver's node id,
//! u64 LE each), to learn which two nodes a connection links. [`PeerProxy::isolate`] cuts
//! every link of a node and refuses its new ones until [`PeerProxy::heal`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use mako_config::Config;

/// Bytes of a peer hello body the proxy needs: magic and version (4), sender (8), receiver (8).
const HELLO_HEAD: usize = 4 + 8 + 8;
/// Largest hello body the proxy accepts.
const HELLO_MAX: usize = 1024;

/// One forwarded connection: the two nodes it links and both of its sockets.
struct Link {
    from: u64,
    to: u64,
    down: TcpStream,
    up: TcpStream,
}

impl Link {
    fn cut(&self) {
        let _ = self.down.shutdown(Shutdown::Both);
        let _ = self.up.shutdown(Shutdown::Both);
    }
}

/// State shared by the proxy's threads.
#[derive(Default)]
struct Inner {
    isolated: Mutex<HashSet<u64>>,
    links: Mutex<HashMap<u64, Link>>,
    next_link: AtomicU64,
    refused: AtomicU64,
    forwarded: AtomicU64,
    stop: AtomicBool,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A proxy in front of every site's peer port; see the module documentation.
pub struct PeerProxy {
    inner: Arc<Inner>,
    /// Site name -> (node id, advertised address, private address).
    sites: BTreeMap<String, (u64, SocketAddr, SocketAddr)>,
    accepts: Vec<JoinHandle<()>>,
}

impl PeerProxy {
    /// Listens on every site's peer address of `cfg` and reserves a private port ([`crate::ports`]) for
    /// each site to listen on instead.
    pub fn start(cfg: &Config) -> io::Result<PeerProxy> {
        let inner = Arc::new(Inner::default());
        let mut sites = BTreeMap::new();
        let mut listeners = Vec::new();
        for s in &cfg.sites {
            let public = cfg.peer_addr(s);
            let l = TcpListener::bind(public)?;
            let private = match crate::ports::reserve(1)?.first() {
                Some(&port) => SocketAddr::new(public.ip(), port),
                None => return Err(io::Error::other("no private port reserved")),
            };
            sites.insert(s.name.clone(), (cfg.node_id(s), public, private));
            listeners.push((l, private));
        }
        let mut accepts = Vec::new();
        for (l, private) in listeners {
            let inner = Arc::clone(&inner);
            accepts.push(std::thread::spawn(move || accept_loop(&inner, &l, private)));
        }
        Ok(PeerProxy {
            inner,
            sites,
            accepts,
        })
    }

    /// The address site `name` must listen on for peers (behind the proxy).
    pub fn private_addr(&self, name: &str) -> Option<SocketAddr> {
        self.sites.get(name).map(|s| s.2)
    }

    /// `["--peer-listen", ADDR]` for site `name` (empty for an unknown site).
    pub fn peer_listen_args(&self, name: &str) -> Vec<String> {
        match self.private_addr(name) {
            Some(a) => vec!["--peer-listen".into(), a.to_string()],
            None => Vec::new(),
        }
    }

    /// Cuts every link of site `name` and refuses its new ones until [`PeerProxy::heal`];
    /// `false` for an unknown site.
    pub fn isolate(&self, name: &str) -> bool {
        let Some(&(node, _, _)) = self.sites.get(name) else {
            return false;
        };
        lock(&self.inner.isolated).insert(node);
        let links = lock(&self.inner.links);
        for l in links.values().filter(|l| l.from == node || l.to == node) {
            l.cut();
        }
        true
    }

    /// Lets every node connect again.
    pub fn heal(&self) {
        lock(&self.inner.isolated).clear();
    }

    /// Connections refused because they named an isolated node.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        // Wake every accept loop.
        for (_, public, _) in self.sites.values() {
            let _ = TcpStream::connect_timeout(public, Duration::from_millis(200));
        }
        for h in self.accepts.drain(..) {
            let _ = h.join();
        }
        for l in lock(&self.inner.links).values() {
            l.cut();
        }
        let workers = std::mem::take(&mut *lock(&self.inner.workers));
        for h in workers {
            let _ = h.join();
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, l: &TcpListener, private: SocketAddr) {
    for conn in l.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(down) = conn else { continue };
        let inner2 = Arc::clone(inner);
        let h = std::thread::spawn(move || {
            let _ = forward(&inner2, down, private);
        });
        let mut w = lock(&inner.workers);
        w.retain(|h| !h.is_finished());
        w.push(h);
    }
}

/// Reads the dialer's hello, refuses it if it names an isolated node, else connects to
/// the site and copies bytes both ways until either side closes or the link is cut.
fn forward(inner: &Arc<Inner>, mut down: TcpStream, private: SocketAddr) -> io::Result<()> {
    down.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut prefix = [0u8; 4];
    down.read_exact(&mut prefix)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if !(HELLO_HEAD..=HELLO_MAX).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a peer hello",
        ));
    }
    let mut hello = vec![0u8; len];
    down.read_exact(&mut hello)?;
    let id = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&hello[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (from, to) = (id(4), id(12));
    let blocked = |i: &HashSet<u64>| i.contains(&from) || i.contains(&to);
    if blocked(&lock(&inner.isolated)) {
        inner.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    down.set_read_timeout(None)?;
    let mut up = TcpStream::connect_timeout(&private, Duration::from_secs(2))?;
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    up.write_all(&prefix)?;
    up.write_all(&hello)?;
    let key = inner.next_link.fetch_add(1, Ordering::Relaxed);
    {
        // Registered under the isolation lock, so an `isolate` either sees this link or
        // this check sees the isolation.
        let iso = lock(&inner.isolated);
        if blocked(&iso) {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        lock(&inner.links).insert(
            key,
            Link {
                from,
                to,
                down: down.try_clone()?,
                up: up.try_clone()?,
            },
        );
    }
    inner.forwarded.fetch_add(1, Ordering::Relaxed);
    let (mut down2, mut up2) = (down.try_clone()?, up.try_clone()?);
    let back = std::thread::spawn(move || {
        let _ = io::copy(&mut up2, &mut down2);
        let _ = down2.shutdown(Shutdown::Both);
        let _ = up2.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut down, &mut up);
    let _ = down.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = back.join();
    lock(&inner.links).remove(&key);
    Ok(())
}
