//! PostgreSQL cancel requests, sent the way libpq sends them.
//!
//! tokio-postgres' `cancel_query` writes the CancelRequest and closes the socket at once.
//! libpq instead waits for the server to close the connection, which is the server saying it
//! has processed the request; PgBouncer 1.18 even crashes ("bad client state") when the cancel
//! connection is closed while it is still forwarding the request. So the stream given to
//! `cancel_query_raw` here only reports its shutdown complete once the peer has closed; the
//! socket itself closes when it is dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::CancelToken;
use tokio_postgres::NoTls;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A TCP stream whose shutdown waits for the peer to close first (no FIN of ours before that:
/// PgBouncer abandons a cancel request whose client half-closed).
struct CloseAfterPeer {
    stream: TcpStream,
}

impl AsyncRead for CloseAfterPeer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CloseAfterPeer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Where the cancel request goes: the first TCP host of the connection configuration.
#[derive(Clone, Debug)]
pub(super) struct CancelTarget {
    pub host: String,
    pub port: u16,
}

pub(super) async fn cancel(
    token: &CancelToken,
    target: &CancelTarget,
    tls: Option<&MakeRustlsConnect>,
) -> Result<(), String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let stream = CloseAfterPeer { stream: tcp };
    let sent = match tls {
        None => token.cancel_query_raw(stream, NoTls).await,
        Some(tls) => {
            let mut tls = tls.clone();
            let connect =
                MakeTlsConnect::<CloseAfterPeer>::make_tls_connect(&mut tls, &target.host)
                    .map_err(|e| e.to_string())?;
            token.cancel_query_raw(stream, connect).await
        }
    };
    sent.map_err(|e| e.to_string())
}
