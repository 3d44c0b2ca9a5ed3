//! The dashboard's listener, with at most [`MAX_CONNECTIONS`] connections open at once.
//!
//! A connection costs an open file from the budget the agents' pipes and logs come from, and
//! anyone on the machine may open one before logging in. So a connection is taken from the
//! kernel's queue only when one of the permits is free; the rest wait there, costing the
//! daemon nothing, until a connection closes. A connection that neither sends nor is sent a
//! byte for [`IDLE`] is closed, so idle ones (a browser's spare connections, a proxy's pool,
//! sockets opened and left) give their permits back; a live page's stream is sent a
//! keep-alive every 15 s.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections served at once: a few browsers' worth (each keeps up to six, one of them the
/// live stream). Counted in the daemon's own share of its open files.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may pass no byte either way: longer than the daemon takes to answer
/// an action (60 s at most), so a request in progress is never cut.
pub const IDLE: Duration = Duration::from_secs(75);

/// A TCP listener that accepts a connection only with a permit in hand.
pub struct Capped {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl Capped {
    pub fn new(listener: TcpListener) -> Capped {
        Capped {
            listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        let permit = (self.permits.clone().acquire_owned().await)
            .expect("the dashboard's permits are never closed");
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        (
            Held {
                stream,
                _permit: permit,
                idle: Box::pin(tokio::time::sleep(IDLE)),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection, holding its permit until it is dropped.
pub struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Ends [`IDLE`] after the last byte either way.
    idle: Pin<Box<Sleep>>,
}

impl Held {
    fn active(&mut self) {
        self.idle.as_mut().reset(Instant::now() + IDLE);
    }
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let held = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut held.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    held.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match held.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the dashboard's connection was idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let held = self.get_mut();
        let written = Pin::new(&mut held.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            held.active();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let held = self.get_mut();
        let written = Pin::new(&mut held.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            held.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that says nothing gives its permit back after [`IDLE`]; one that talks
    /// keeps it.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_gives_its_permit_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut capped = Capped::new(listener);
        let mut client = TcpStream::connect(address).await.unwrap();
        let (mut held, _) = capped.accept().await;
        assert_eq!(capped.permits.available_permits(), MAX_CONNECTIONS - 1);
        // Talk just inside the limit: still open.
        tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        held.read_exact(&mut byte).await.unwrap();
        // Then silence past it: the read ends in an error, and the permit comes back with it.
        let silent = held.read(&mut byte).await.unwrap_err();
        assert_eq!(silent.kind(), io::ErrorKind::TimedOut);
        drop(held);
        assert_eq!(capped.permits.available_permits(), MAX_CONNECTIONS);
    }
}
