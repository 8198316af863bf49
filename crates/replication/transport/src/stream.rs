//! The two halves of a peer connection, plain TCP or TLS over TCP, behind one type each.
//!
//! Plain TCP keeps tokio's lock-free owned halves; a TLS stream is one state machine, so
//! it is split with [`tokio::io::split`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::tls::TlsSettings;

/// Reading half of a connection.
pub(crate) enum ReadSide {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// Writing half of a connection.
pub(crate) enum WriteSide {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

/// Splits a plain TCP stream.
pub(crate) fn plain(stream: TcpStream) -> (ReadSide, WriteSide) {
    let (r, w) = stream.into_split();
    (ReadSide::Plain(r), WriteSide::Plain(w))
}

/// Runs the client side of a TLS handshake over `stream` and splits the result.
pub(crate) async fn tls_connect(
    tls: &TlsSettings,
    stream: TcpStream,
) -> io::Result<(ReadSide, WriteSide)> {
    let s = TlsConnector::from(tls.client.clone())
        .connect(tls.server_name.clone(), stream)
        .await?;
    let (r, w) = tokio::io::split(TlsStream::Client(s));
    Ok((ReadSide::Tls(r), WriteSide::Tls(w)))
}

/// Runs the server side of a TLS handshake over `stream` and splits the result.
pub(crate) async fn tls_accept(
    tls: &TlsSettings,
    stream: TcpStream,
) -> io::Result<(ReadSide, WriteSide)> {
    let s = TlsAcceptor::from(tls.server.clone()).accept(stream).await?;
    let (r, w) = tokio::io::split(TlsStream::Server(s));
    Ok((ReadSide::Tls(r), WriteSide::Tls(w)))
}

/// Whether `e` came from TLS (a handshake failure or an alert) rather than the socket or framing.
pub(crate) fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteSide::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteSide::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteSide::Plain(w) => w.is_write_vectored(),
            WriteSide::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
