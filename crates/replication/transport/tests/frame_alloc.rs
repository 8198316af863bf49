//! A peer's length prefix never makes the transport allocate what it claims: before the
//! hello a frame is at most the hello's size, after it buffers grow only as bytes arrive.
//! Measured with a counting global allocator (this test binary holds one test only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mako_transport::tcp::{TcpConfig, TcpTransport};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts counting the peak from the current live bytes; returns them.
fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::SeqCst);
    PEAK.store(live, Ordering::SeqCst);
    live
}

/// Bytes of a hello frame's body (version 2: magic, version, ids, mode, nonce, proof).
#[path = "common/closed.rs"]
mod closed;
use closed::wait_closed;

const HELLO_LEN: usize = 4 + 8 + 8 + 1 + 32 + 32;

/// An unauthenticated version-2 hello frame, length prefix included.
fn hello(from: u64, to: u64) -> Vec<u8> {
    let mut v = (HELLO_LEN as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b"MKT2");
    v.extend_from_slice(&from.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v.push(0);
    v.extend_from_slice(&[0u8; 64]);
    v
}

#[test]
fn claimed_frame_lengths_are_not_allocated() {
    const MIB: usize = 1 << 20;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (t, _rx) = TcpTransport::start(90, any, HashMap::new(), TcpConfig::default()).unwrap();
    // Node 10 would dial us; a raw client poses as it after the hello.
    t.set_peer_addr(10, "127.0.0.1:9".parse().unwrap());
    let addr = t.local_addr();
    let claim = (60 * MIB as u32).to_be_bytes(); // below the 64 MiB max_frame_bytes
    let body = vec![7u8; MIB];

    // Before the hello: 24 connections each announce a 60 MiB frame and are closed.
    let mut conns: Vec<TcpStream> = Vec::new();
    let base = reset_peak();
    for _ in 0..24 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&claim).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        wait_closed(s);
    }
    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(peak < 4 * MIB, "pre-hello prefixes allocated {peak} bytes");
    drop(conns);

    // After the hello: a 60 MiB claim followed by 1 MiB grows buffers by what arrives only.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello(10, 90)).unwrap();
    let mut reply = [0u8; 4 + HELLO_LEN];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[4..8], b"MKT2");
    let base = reset_peak();
    s.write_all(&claim).unwrap();
    s.write_all(&body).unwrap();
    s.shutdown(Shutdown::Write).unwrap(); // the frame is cut short: the link closes
    wait_closed(&mut s);
    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(
        peak < 8 * MIB,
        "a 60 MiB claim with 1 MiB sent allocated {peak} bytes"
    );
    t.shutdown();
}
