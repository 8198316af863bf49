//! A Redis-compatible front end for mako-rs: `redis-cli`, `redis-benchmark` and Redis client
//! libraries talk RESP2 or RESP3 to a replicated, sharded, transactional store.
//!
//! The crate is layered so that each part is testable on its own:
//!
//! 1. [`resp`] is the wire format. A [`resp::Parser`] turns the bytes a client sends into
//!    requests (arrays of bulk strings, or inline commands as typed at a terminal), one at
//!    a time and incrementally, refusing lengths beyond its [`resp::Limits`] before
//!    allocating anything. A [`resp::Value`] is a reply, encoded for protocol 2 or 3.
//! 2. [`command`] is the command table: [`command::parse`] validates a request's arguments
//!    into a typed [`command::Command`], with Redis's error texts (`ERR wrong number of
//!    arguments for 'get' command`, `ERR syntax error`, ...).
//! 3. [`conn`] is one connection's state machine: [`conn::Connection::handle`] answers a
//!    request, keeping the protocol version (HELLO), authentication (AUTH), the client name,
//!    the MULTI queue and WATCHed keys.
//! 4. Keys live behind a [`Backend`]: [`Backend::transact`] runs a body of operations
//!    ([`Txn`]: get, put, delete, add, append, scan) as one transaction and returns once it
//!    is released. Every command is one transaction; EXEC runs its whole queue as one. A
//!    mako-rs node implements [`Store`] with its coordinator; [`MemStore`] is a serial
//!    in-memory store for tests and examples.
//! 5. [`Server`] listens for TCP connections and serves them on a few event loops: each reads
//!    whatever its clients pipelined and runs every complete request in order. A run of data
//!    commands whose keys are all served here commits on the loop ([`Backend::try_local`])
//!    and its replies wait, without a thread, until [`Release::poll`] says it is released
//!    ([`Store::on_progress`] wakes the loop); anything that may block goes to the
//!    connection's helper thread. No reply leaves before its transaction is released. A
//!    malformed request is answered with `-ERR Protocol error: ...` and closes that
//!    connection only.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use mako_redis::{MemStore, Options, Server};
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let mut server = Server::start(listener, Arc::new(MemStore::new()), Options::default()).unwrap();
//! let mut c = std::net::TcpStream::connect(server.addr()).unwrap();
//! c.write_all(b"SET greeting hello\r\nGET greeting\r\n").unwrap();
//! let mut reply = [0u8; 16];
//! c.read_exact(&mut reply).unwrap();
//! assert_eq!(&reply, b"+OK\r\n$5\r\nhello\r\n");
//! server.stop();
//! ```
//!
//! Semantics worth knowing: EXEC runs the queued commands as one serializable transaction,
//! so either all of their writes apply or none; a command that fails at run time (INCR of
//! a non-integer) writes nothing and answers its error in EXEC's array while the others
//! apply, as in Redis. WATCH remembers each key's value; EXEC re-reads them inside its
//! transaction and answers a nil array if any differs (a key changed and changed back to
//! the same value is not noticed). Keys do not expire: SET's EX/PX/EXAT/PXAT/KEEPTTL are
//! refused with an error saying so.

#![warn(missing_docs)]

pub mod backend;
pub mod command;
pub mod conn;
pub mod glob;
pub mod resp;
pub mod server;

pub use backend::{Backend, Body, Failure, Figures, MemStore, Release, Store, Txn, Wake};
pub use server::{Options, Server};

#[cfg(test)]
mod tests;
