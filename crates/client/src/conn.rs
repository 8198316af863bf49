//! One authenticated connection to one site: the handshake, then request/response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mako_proto::{
    Auth, AuthResult, Body, CLIENT_LABEL, FrameError, Hello, MAGIC, MAX_FRAME, MAX_HELLO, Reply,
    Request, Response, SERVER_LABEL, VERSION, Welcome, decode, read_frame, write_frame,
};
use mako_transport::auth::{self, Secret};
use mako_transport::tls::TlsSettings;
use std::sync::Arc;

use crate::ClientError;

/// A stream a connection runs over (plain TCP, or TLS around it).
pub(crate) trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// An open connection.
pub(crate) struct Conn {
    stream: Box<dyn Stream>,
    next: u64,
    /// Who answered the hello.
    pub(crate) welcome: Welcome,
}

impl Conn {
    /// Connects to `addr` and runs the handshake.
    pub(crate) fn open(
        addr: SocketAddr,
        tls: Option<&TlsSettings>,
        token: Option<&Secret>,
        connect_timeout: Duration,
        reply_timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect_timeout(&addr, connect_timeout)
            .map_err(|e| ClientError::Connect { addr, source: e })?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(connect_timeout))
            .map_err(|e| ClientError::Connect { addr, source: e })?;
        let plain = tcp
            .try_clone()
            .map_err(|e| ClientError::Connect { addr, source: e })?;
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(plain),
            Some(t) => {
                let conn =
                    rustls::ClientConnection::new(Arc::clone(&t.client), t.server_name.clone())
                        .map_err(|e| ClientError::Auth(format!("TLS: {e}")))?;
                Box::new(rustls::StreamOwned::new(conn, plain))
            }
        };
        let nonce = auth::nonce();
        write_frame(
            &mut stream,
            &Hello {
                magic: MAGIC,
                version: VERSION,
                nonce,
            },
        )?;
        let welcome: Welcome = decode(&read_frame(&mut stream, MAX_HELLO)?)?;
        if let Some(why) = welcome.refused {
            return Err(ClientError::Refused(why));
        }
        match (token, welcome.auth_required) {
            (None, true) => {
                return Err(ClientError::Auth(
                    "the server requires a client token and none is configured".into(),
                ));
            }
            (Some(t), true) => {
                // The server proves the token first, so a client never talks to an impostor.
                let ok = welcome.proof.is_some_and(|p| {
                    auth::verify(t, SERVER_LABEL, &nonce, &welcome.nonce, &[], &p)
                });
                if !ok {
                    return Err(ClientError::Auth(
                        "the server could not prove the client token".into(),
                    ));
                }
                let proof = auth::prove(t, CLIENT_LABEL, &welcome.nonce, &nonce, &[]);
                write_frame(&mut stream, &Auth { proof })?;
                match decode::<AuthResult>(&read_frame(&mut stream, MAX_HELLO)?)? {
                    AuthResult::Ok => {}
                    AuthResult::Refused(why) => return Err(ClientError::Auth(why)),
                }
            }
            (Some(_), false) => {
                // A server of this deployment requires the token; one that does not ask for it
                // cannot prove it knows it (an impostor, or a misconfigured site).
                return Err(ClientError::Auth(
                    "the server does not ask for the client token, so it cannot prove it; \
                     refusing to talk to it"
                        .into(),
                ));
            }
            (None, false) => {}
        }
        tcp.set_read_timeout(Some(reply_timeout))
            .map_err(|e| ClientError::Connect { addr, source: e })?;
        Ok(Conn {
            stream,
            next: 1,
            welcome,
        })
    }

    /// Sends one request and waits for its response.
    pub(crate) fn call(&mut self, body: Body) -> Result<Reply, ClientError> {
        let id = self.next;
        self.next += 1;
        write_frame(&mut self.stream, &Request { id, body })?;
        let resp: Response = decode(&read_frame(&mut self.stream, MAX_FRAME)?)?;
        if resp.id != id {
            return Err(ClientError::Protocol(format!(
                "response to request {} while waiting for {id}",
                resp.id
            )));
        }
        Ok(resp.reply)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Io(e),
            FrameError::Closed => ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}
