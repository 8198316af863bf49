//! The mako-rs client wire protocol, shared by servers (`mako-node`) and clients
//! (`mako-client`).
//!
//! # Frames
//!
//! A connection carries frames: a 4-byte big-endian length, then that many bytes of a
//! [postcard](https://docs.rs/postcard) encoded message. A length above the connection's
//! cap ([`MAX_FRAME`] by default, [`MAX_HELLO`] before the handshake ends) is a *malformed
//! frame*: the receiver closes that connection (and only that one). A frame whose bytes do
//! not decode as a request is a *malformed request*: the server answers it with
//! [`Reply::Error`] (code [`ErrorCode::Malformed`]) and keeps the connection.
//!
//! # Handshake
//!
//! 1. The client sends [`Hello`]: the magic `MAKO`, its protocol [`VERSION`], a fresh nonce.
//! 2. The server answers [`Welcome`]: its version, who it is, its own nonce, whether a client
//!    token is required, and (when one is configured) its proof of the token over the
//!    client's nonce. A server that does not speak the client's version answers
//!    [`Welcome::refused`] and closes.
//! 3. With a token, the client sends [`Auth`]: its proof of the token over the server's
//!    nonce (see `mako_transport::auth`; the token itself never crosses the wire), and the
//!    server answers [`AuthResult`]. A failed proof closes the connection.
//!
//! # Requests
//!
//! Each [`Request`] carries an id that its [`Response`] repeats; a connection answers its
//! requests in order, so clients may pipeline. Interactive transactions are opened with
//! [`Body::Begin`] on a shard leader (the *coordinator*), then read and written with
//! [`Body::Op`] (keys of any shard; the coordinator reaches the others), and ended with
//! [`Body::Commit`] or [`Body::Abort`]. [`Body::Run`] runs a list of operations as one
//! transaction in one request. A commit answers [`Reply::Committed`] only at release
//! (durable on a majority of every shard touched), [`Reply::Aborted`] when the transaction
//! will never be visible, and [`Reply::Unknown`] when its release did not arrive in time.

mod frame;
mod msg;

pub use frame::{FrameError, FrameReader, decode, encode, read_frame, write_frame};
pub use msg::*;

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// The first bytes of every client hello.
pub const MAGIC: [u8; 4] = *b"MAKO";

/// Largest frame after the handshake (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// Most bytes of operation results one reply carries (the rest of [`MAX_FRAME`] is left
/// for the reply's envelope); a larger result is refused with [`ErrorCode::TooLarge`].
pub const MAX_RESULTS: usize = MAX_FRAME - (64 << 10);

/// Largest frame before the handshake ends.
pub const MAX_HELLO: usize = 1024;

/// Label of the client's proof of the client token (binds a proof to its direction).
pub const CLIENT_LABEL: &[u8] = b"mako client proof v1";

/// Label of the server's proof of the client token.
pub const SERVER_LABEL: &[u8] = b"mako server proof v1";
