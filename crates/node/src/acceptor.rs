//! A listener served on its own thread, stopped by a flag and a wake-up connection (shared by
//! the client listener and the metrics endpoint).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running accept thread.
pub(crate) struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Runs `serve(listener, stop)` on a thread named `name`; `serve` checks `stop` after each
    /// accepted connection.
    pub(crate) fn start(
        listener: TcpListener,
        name: String,
        serve: impl FnOnce(TcpListener, Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Acceptor> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(listener, flag))?;
        Ok(Acceptor {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Raises the flag, wakes the blocking accept and joins the thread; `false` if it was
    /// already stopped.
    pub(crate) fn stop(&mut self) -> bool {
        if self.stop.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop();
    }
}
