//! Waiting, in a test, until the transport closes a raw connection.

use std::io::Read;
use std::net::TcpStream;

/// Reads until the transport closes the connection (the caller sets the read timeout); a
/// read that times out first means the connection was not closed.
pub fn wait_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "connection was not closed"
                );
                return;
            }
        }
    }
}
