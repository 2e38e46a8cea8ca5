//! `wss://` without rustls's buffers: [`TlsStream`], a server TLS stream on rustls's unbuffered
//! API (`UnbufferedServerConnection`), and the [`TlsAcceptor`] that makes it.
//!
//! `tokio-rustls` drives rustls's buffered connection, which keeps a record buffer of 4 KiB (and
//! more after a large record) for the connection's life, idle or not. Over TLS that buffer was
//! the largest single piece of an idle connection (docs/PERFORMANCE.md, idle memory). Here the
//! connection's state is rustls's own (keys, sequence numbers, the state machine) and the buffers
//! are ours, sized to what is in flight:
//!
//! - **Reads** go into one scratch buffer per worker thread, after what the last read left over;
//!   rustls decrypts the complete records and their plaintext goes straight into the caller's
//!   buffer. Only a record cut by the read (its beginning) is kept, in a buffer of its exact size,
//!   and what the caller had no room for. An idle connection keeps neither.
//! - **Writes** are encrypted into a per-thread scratch buffer and written to the socket at once;
//!   only what the socket did not take is kept, until a flush (or the next write) sends it. A
//!   write is accepted only when nothing is waiting: the back-pressure a plain socket gives.
//! - **Handshake messages** after the handshake: rustls answers a client's key update in the
//!   output of the next write, ahead of that write's data (the answer under the old key, the data
//!   under the new one). Nothing else is sent unasked.
//!
//! The stream behaves as tokio-rustls's did for everything above it: the end of the client's
//! stream without a `close_notify` is an `UnexpectedEof` error, a shutdown sends `close_notify`
//! and then the TCP FIN, and rustls's errors are `InvalidData` errors carrying rustls's message.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most plaintext in one record (TLS's maximum fragment, 2^14): a write encrypts at most this
/// much, so its ciphertext fits the write scratch buffer without growing it.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// The largest record a client may send: the header and 2^14 + 2048 bytes (TLS 1.2 allows that
/// much expansion; TLS 1.3 less). The most a read can leave over is one byte less.
const MAX_RECORD: usize = 5 + RECORD_PLAINTEXT + 2048;

/// The most one read takes from the socket.
const READ_BYTES: usize = 16 * 1024;

/// The most the handshake buffers of the client's flight: a ClientHello (even with large key
/// shares) is a few KiB; rustls caps a handshake message at 64 KiB.
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024 + MAX_RECORD;

/// Guards the loops that drain rustls's queued messages: each turn makes progress, and a handful
/// of messages is all rustls ever queues at once.
const MAX_DRAIN_TURNS: usize = 64;

thread_local! {
    /// Reads: the leftover of the last read, then up to `READ_BYTES` from the socket.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Writes: the gathered plaintext of a vectored write, and the ciphertext of a write.
    static WRITE_SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Makes [`TlsStream`]s from accepted connections with the server's TLS configuration.
#[derive(Clone)]
pub(crate) struct TlsAcceptor(Arc<ServerConfig>);

impl From<Arc<ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self(config)
    }
}

impl TlsAcceptor {
    /// The TLS handshake on `io`. A failure sends the alert rustls chose (best effort) and returns
    /// the error; the caller bounds the whole with the handshake deadline.
    pub(crate) async fn accept<IO>(&self, mut io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = UnbufferedServerConnection::new(Arc::clone(&self.0)).map_err(tls_error)?;
        let mut incoming = Vec::with_capacity(4096);
        let mut plaintext = BytesMut::new();
        let mut outgoing = BytesMut::new();
        let mut closed = false;
        loop {
            let processed =
                process(&mut conn, &mut incoming[..], &mut |data| plaintext.extend_from_slice(data), &mut outgoing);
            let (used, outcome) = match processed {
                Ok(processed) => processed,
                Err(e) => {
                    queue_pending(&mut conn, &mut outgoing);
                    let _ = io.write_all(&outgoing).await;
                    return Err(tls_error(e));
                }
            };
            incoming.drain(..used);
            if !outgoing.is_empty() {
                io.write_all(&outgoing).await?;
                outgoing.clear();
            }
            match outcome {
                // TLS 1.3 lets the server write after its Finished; the handshake is done only
                // with the client's, so that a client refusing it fails here, in time.
                Outcome::Traffic { peer_closed } if !conn.is_handshaking() => {
                    closed |= peer_closed;
                    break;
                }
                Outcome::Traffic { .. } | Outcome::Blocked => {}
                Outcome::Closed => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS closed in its handshake"));
                }
            }
            if incoming.len() >= MAX_HANDSHAKE_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake flight too large"));
            }
            incoming.reserve(4096);
            if io.read_buf(&mut incoming).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake cut off by the client"));
            }
        }
        Ok(TlsStream {
            io,
            conn,
            read_spill: ReadSpill::boxed(incoming.as_slice().to_vec(), plaintext),
            outgoing: BytesMut::new(),
            read_closed: closed,
            close_sent: false,
        })
    }
}

/// A server TLS connection over `IO` after its handshake (see the module docs).
pub(crate) struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// What the last read left over; none (no allocation) between bursts.
    read_spill: Option<Box<ReadSpill>>,
    /// Ciphertext the socket has not taken yet; empty (no allocation) once flushed.
    outgoing: BytesMut,
    /// The client's `close_notify` arrived: reads return the end of the stream.
    read_closed: bool,
    /// Our `close_notify` is queued or sent.
    close_sent: bool,
}

/// What a read left over: one box, made only when there is something, so that an idle
/// connection's stream is two words smaller than with both buffers in it.
#[derive(Default)]
struct ReadSpill {
    /// The beginning of a record the read cut.
    incoming: Vec<u8>,
    /// Decrypted and not read yet.
    plaintext: BytesMut,
}

impl ReadSpill {
    fn boxed(incoming: Vec<u8>, plaintext: BytesMut) -> Option<Box<ReadSpill>> {
        (!incoming.is_empty() || !plaintext.is_empty()).then(|| Box::new(ReadSpill { incoming, plaintext }))
    }
}

/// Where processing the buffered records stopped.
enum Outcome {
    /// The handshake is done and every complete record was processed; `peer_closed` when one was
    /// the client's `close_notify`.
    Traffic { peer_closed: bool },
    /// The handshake needs more of the client's flight.
    Blocked,
    /// Both sides sent `close_notify`.
    Closed,
}

/// Processes the complete records in `incoming`: application data goes to `deliver`, the
/// records rustls has to send are appended to `outgoing`. Returns how many bytes of `incoming`
/// were used (the rest is the beginning of a record) and where it stopped.
fn process(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    deliver: &mut dyn FnMut(&[u8]),
    outgoing: &mut BytesMut,
) -> Result<(usize, Outcome), rustls::Error> {
    let mut used = 0;
    let mut peer_closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[used..]);
        let stop = match state {
            Err(e) => {
                return Err(e);
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                while let Some(record) = records.next_record() {
                    let record = record?;
                    discard += record.discard;
                    deliver(record.payload);
                }
                None
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, outgoing)?;
                None
            }
            // Ours from here: `outgoing` is sent in order before anything written later.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                None
            }
            Ok(ConnectionState::PeerClosed) => {
                peer_closed = true;
                None
            }
            Ok(ConnectionState::Closed) => Some(Outcome::Closed),
            Ok(ConnectionState::WriteTraffic(_)) => Some(Outcome::Traffic { peer_closed }),
            Ok(ConnectionState::BlockedHandshake) => Some(Outcome::Blocked),
            // The configuration accepts no early data (`max_early_data_size` 0).
            Ok(ConnectionState::ReadEarlyData(_)) => {
                return Err(rustls::Error::General("unexpected early data".into()));
            }
            Ok(other) => return Err(rustls::Error::General(format!("unexpected TLS state {other:?}"))),
        };
        used += discard;
        if let Some(outcome) = stop {
            return Ok((used, outcome));
        }
    }
}

/// Appends the handshake record `encode` holds to `outgoing`.
fn encode_into(
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut BytesMut,
) -> Result<(), rustls::Error> {
    let start = outgoing.len();
    let needed = match encode.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
        Err(EncodeError::AlreadyEncoded) => return Ok(()),
    };
    outgoing.resize(start + needed, 0);
    match encode.encode(&mut outgoing[start..]) {
        Ok(written) => {
            outgoing.truncate(start + written);
            Ok(())
        }
        Err(e) => {
            outgoing.truncate(start);
            Err(rustls::Error::General(e.to_string()))
        }
    }
}

/// Moves what rustls has queued to send after an error (its alert) into `outgoing`.
fn queue_pending(conn: &mut UnbufferedServerConnection, outgoing: &mut BytesMut) {
    for _ in 0..MAX_DRAIN_TURNS {
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if encode_into(&mut encode, outgoing).is_err() {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// rustls's error as an I/O error, with rustls's message.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Sends what waits in `outgoing`; ready once all of it is with the socket.
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(written);
        }
        // Give the allocation back: an idle connection keeps no write buffer.
        if self.outgoing.capacity() > 0 {
            self.outgoing = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Runs `f` with rustls's write state, after queueing what rustls has to send before it.
    fn with_write_traffic<T>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> Result<T, EncryptError>,
    ) -> io::Result<T> {
        let spill = &mut self.read_spill;
        let mut deliver = |data: &[u8]| {
            spill.get_or_insert_default().plaintext.extend_from_slice(data);
        };
        let mut result = None;
        for _ in 0..MAX_DRAIN_TURNS {
            let state = self.conn.process_tls_records(&mut []).state.map_err(tls_error)?;
            match state {
                ConnectionState::WriteTraffic(mut write) => {
                    result = Some(f(&mut write).map_err(|e| io::Error::other(e.to_string())));
                    break;
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut encode, &mut self.outgoing).map_err(tls_error)?
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        deliver(record.map_err(tls_error)?.payload);
                    }
                }
                ConnectionState::PeerClosed => self.read_closed = true,
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                other => return Err(io::Error::other(format!("TLS not ready to write: {other:?}"))),
            }
        }
        result.ok_or_else(|| io::Error::other("TLS write state not reached"))?
    }

    /// Encrypts `plaintext` (at most one record's worth) and writes it, or queues what the socket
    /// does not take.
    fn encrypt_and_send(&mut self, cx: &mut Context<'_>, plaintext: &[u8], cipher: &mut Vec<u8>) -> io::Result<()> {
        let written = self.with_write_traffic(|write| match write.encrypt(plaintext, cipher) {
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                cipher.resize(required_size, 0);
                write.encrypt(plaintext, cipher)
            }
            other => other,
        })?;
        let cipher = &cipher[..written];
        if !self.outgoing.is_empty() {
            // What rustls queued before this write (`with_write_traffic`) goes first.
            self.outgoing.extend_from_slice(cipher);
            return match self.poll_send_queued(cx) {
                Poll::Ready(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
        let sent = match Pin::new(&mut self.io).poll_write(cx, cipher) {
            Poll::Ready(Ok(sent)) => sent,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        if sent < cipher.len() {
            self.outgoing.extend_from_slice(&cipher[sent..]);
        }
        Ok(())
    }

    /// One write: `single`, or the `slices` gathered, up to one record of plaintext.
    fn poll_write_gathered(
        &mut self,
        cx: &mut Context<'_>,
        single: Option<&[u8]>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.close_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS stream shut down")));
        }
        ready!(self.poll_send_queued(cx))?;
        let written = WRITE_SCRATCH.with(|scratch| {
            let mut fallback = (Vec::new(), Vec::new());
            let mut borrowed = scratch.try_borrow_mut();
            let (gather, cipher) = match borrowed.as_deref_mut() {
                Ok(scratch) => scratch,
                Err(_) => &mut fallback,
            };
            if cipher.len() < MAX_RECORD {
                cipher.resize(MAX_RECORD, 0);
            }
            let plaintext = match single {
                Some(buf) => &buf[..buf.len().min(RECORD_PLAINTEXT)],
                None => {
                    gather.clear();
                    for slice in slices {
                        let room = RECORD_PLAINTEXT - gather.len();
                        gather.extend_from_slice(&slice[..slice.len().min(room)]);
                        if gather.len() == RECORD_PLAINTEXT {
                            break;
                        }
                    }
                    &gather[..]
                }
            };
            self.encrypt_and_send(cx, plaintext, cipher).map(|()| plaintext.len())
        });
        Poll::Ready(written)
    }

    /// Reads from the socket and decrypts what arrived; `out` gets the plaintext it has room
    /// for, `self.read_spill` the rest. Ready when there is something to hand out, or the end.
    fn poll_read_records(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        READ_SCRATCH.with(|scratch| {
            let mut fallback = Vec::new();
            let mut borrowed = scratch.try_borrow_mut();
            let buffer = match borrowed.as_deref_mut() {
                Ok(scratch) => scratch,
                Err(_) => &mut fallback,
            };
            if buffer.len() < READ_BYTES + MAX_RECORD {
                buffer.resize(READ_BYTES + MAX_RECORD, 0);
            }
            loop {
                // Reads come only when no plaintext is left over (`poll_read`).
                let kept = self.read_spill.as_ref().map_or(0, |spill| spill.incoming.len());
                if let Some(spill) = &self.read_spill {
                    buffer[..kept].copy_from_slice(&spill.incoming);
                }
                let mut read = ReadBuf::new(&mut buffer[kept..kept + READ_BYTES]);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
                let arrived = read.filled().len();
                if arrived == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )));
                }
                let end = kept + arrived;
                let mut overflow = BytesMut::new();
                let mut delivered = false;
                let mut deliver = |data: &[u8]| {
                    delivered |= !data.is_empty();
                    let room = out.remaining().min(data.len());
                    out.put_slice(&data[..room]);
                    overflow.extend_from_slice(&data[room..]);
                };
                let processed = process(&mut self.conn, &mut buffer[..end], &mut deliver, &mut self.outgoing);
                let (used, outcome) = match processed {
                    Ok(processed) => processed,
                    Err(e) => {
                        queue_pending(&mut self.conn, &mut self.outgoing);
                        let _ = self.poll_send_queued(cx);
                        return Poll::Ready(Err(tls_error(e)));
                    }
                };
                self.read_spill = ReadSpill::boxed(buffer[used..end].to_vec(), overflow);
                match outcome {
                    Outcome::Traffic { peer_closed } => self.read_closed |= peer_closed,
                    Outcome::Closed => self.read_closed = true,
                    Outcome::Blocked => {
                        return Poll::Ready(Err(io::Error::other("TLS handshake state after the handshake")));
                    }
                }
                // What rustls has to send after these records (an alert, say) goes now if the
                // socket takes it, with the next write or flush otherwise.
                if let Poll::Ready(Err(e)) = self.poll_send_queued(cx) {
                    return Poll::Ready(Err(e));
                }
                if delivered || self.read_closed {
                    return Poll::Ready(Ok(()));
                }
            }
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(spill) = &mut this.read_spill
            && !spill.plaintext.is_empty()
        {
            let room = out.remaining().min(spill.plaintext.len());
            out.put_slice(&spill.plaintext[..room]);
            spill.plaintext.advance(room);
            if spill.plaintext.is_empty() {
                spill.plaintext = BytesMut::new();
                if spill.incoming.is_empty() {
                    this.read_spill = None;
                }
            }
            return Poll::Ready(Ok(()));
        }
        if this.read_closed || out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        this.poll_read_records(cx, out)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().poll_write_gathered(cx, Some(buf), &[])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().poll_write_gathered(cx, None, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_send_queued(cx))?;
            let mut alert = Vec::new();
            let written = this.with_write_traffic(|write| match write.queue_close_notify(&mut alert) {
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    alert.resize(required_size, 0);
                    write.queue_close_notify(&mut alert)
                }
                other => other,
            })?;
            this.outgoing.extend_from_slice(&alert[..written]);
            this.close_sent = true;
        }
        ready!(this.poll_send_queued(cx))?;
        Poll::Ready(match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    type Client = tokio_rustls::client::TlsStream<DuplexStream>;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server configuration for a fresh `localhost` certificate, and that certificate.
    fn server_config() -> (Arc<ServerConfig>, CertificateDer<'static>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        (Arc::new(config), cert)
    }

    fn connector(
        cert: &CertificateDer<'static>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A client and a server stream over an in-memory pipe of `pipe` bytes (small pipes make
    /// writes wait and reads come in pieces).
    async fn pair(
        version: &'static rustls::SupportedProtocolVersion,
        pipe: usize,
    ) -> (Client, TlsStream<DuplexStream>) {
        let (config, cert) = server_config();
        let (client_io, server_io) = duplex(pipe);
        let name = ServerName::try_from("localhost").expect("name");
        let client = connector(&cert, version).connect(name, client_io);
        let acceptor = TlsAcceptor::from(config);
        let server = acceptor.accept(server_io);
        let (client, server) = tokio::join!(client, server);
        (client.expect("client handshake"), server.expect("server handshake"))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn assert_idle(server: &TlsStream<DuplexStream>) {
        assert!(server.read_spill.is_none(), "no record or plaintext kept");
        assert_eq!(server.outgoing.capacity(), 0, "no ciphertext kept");
    }

    /// Both directions at once, with messages larger than a record through a pipe smaller
    /// than one, read in small pieces on the server.
    async fn exchange(version: &'static rustls::SupportedProtocolVersion) {
        let (mut client, mut server) = pair(version, 1024).await;
        let up = pattern(100_000, 1);
        let down = pattern(70_000, 2);
        let send_up = async {
            client.write_all(&up).await.expect("client write");
            client.flush().await.expect("client flush");
            let mut back = vec![0; down.len()];
            client.read_exact(&mut back).await.expect("client read");
            back
        };
        let serve = async {
            let mut got = Vec::new();
            let mut piece = [0u8; 700];
            while got.len() < up.len() {
                let n = server.read(&mut piece).await.expect("server read");
                assert!(n > 0, "no end of stream in the middle");
                got.extend_from_slice(&piece[..n]);
            }
            server.write_all(&down).await.expect("server write");
            server.flush().await.expect("server flush");
            got
        };
        let (back, got) = tokio::join!(send_up, serve);
        assert!(got == up, "the server read what the client wrote");
        assert!(back == down, "the client read what the server wrote");
        assert_idle(&server);
    }

    #[tokio::test]
    async fn tls13_carries_data_both_ways_and_keeps_no_buffer_between() {
        exchange(&rustls::version::TLS13).await;
    }

    #[tokio::test]
    async fn tls12_carries_data_both_ways_and_keeps_no_buffer_between() {
        exchange(&rustls::version::TLS12).await;
    }

    #[tokio::test]
    async fn vectored_writes_gather_the_slices() {
        let (mut client, mut server) = pair(&rustls::version::TLS13, 64 * 1024).await;
        let slices = [io::IoSlice::new(b"head:"), io::IoSlice::new(b""), io::IoSlice::new(b"body")];
        let written = server.write_vectored(&slices).await.expect("vectored write");
        assert_eq!(written, 9);
        server.flush().await.expect("flush");
        let mut got = [0u8; 9];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"head:body");
    }

    #[tokio::test]
    async fn a_client_key_update_is_answered_before_data_under_the_new_key() {
        let (mut client, mut server) = pair(&rustls::version::TLS13, 64 * 1024).await;
        for round in 0..3u8 {
            // The client asks for an update of both directions' keys with its next record.
            client.get_mut().1.refresh_traffic_keys().expect("key update");
            client.write_all(&[round; 10]).await.expect("client write");
            client.flush().await.expect("client flush");
            let mut got = [0u8; 10];
            server.read_exact(&mut got).await.expect("server read under the client's new key");
            assert_eq!(got, [round; 10]);
            server.write_all(&[round + 100; 20]).await.expect("server write");
            server.flush().await.expect("server flush");
            let mut back = [0u8; 20];
            client.read_exact(&mut back).await.expect("client read under the server's new key");
            assert_eq!(back, [round + 100; 20]);
        }
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_both_ways() {
        let (mut client, mut server) = pair(&rustls::version::TLS13, 64 * 1024).await;
        client.write_all(b"last").await.expect("write");
        client.shutdown().await.expect("client close_notify");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("a clean end after close_notify");
        assert_eq!(got, b"last");
        server.shutdown().await.expect("server close_notify");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("the client sees a clean end");
        assert!(rest.is_empty());
        assert!(server.write_all(b"late").await.is_err(), "no write after the shutdown");
    }

    #[tokio::test]
    async fn an_end_without_close_notify_is_unexpected() {
        let (client, mut server) = pair(&rustls::version::TLS13, 64 * 1024).await;
        let (raw, _) = client.into_inner();
        drop(raw);
        let mut got = Vec::new();
        let error = server.read_to_end(&mut got).await.expect_err("truncation is an error");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_forged_record_is_an_error_with_an_alert() {
        // TLS 1.2, whose alerts keep their record type (TLS 1.3 hides it, and its tickets may
        // come first).
        let (client, mut server) = pair(&rustls::version::TLS12, 64 * 1024).await;
        let (mut raw, _) = client.into_inner();
        // An application data record whose ciphertext and tag are zeros.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend_from_slice(&[0; 32]);
        raw.write_all(&record).await.expect("raw write");
        let mut piece = [0u8; 64];
        let error = server.read(&mut piece).await.expect_err("a record that does not decrypt");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut alert = [0u8; 1];
        raw.read_exact(&mut alert).await.expect("the server's alert");
        assert_eq!(alert[0], 0x15, "an alert record (bad_record_mac)");
    }

    #[tokio::test]
    async fn a_client_that_does_not_speak_tls_is_refused() {
        let (config, _) = server_config();
        let (mut client_io, server_io) = duplex(4096);
        client_io.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let error = TlsAcceptor::from(config).accept(server_io).await.err().expect("not TLS");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut alert = [0u8; 1];
        client_io.read_exact(&mut alert).await.expect("an alert");
        assert_eq!(alert[0], 0x15);
    }

    #[tokio::test]
    async fn a_handshake_cut_off_is_an_error() {
        let (config, _) = server_config();
        let (mut client_io, server_io) = duplex(4096);
        // The beginning of a handshake record, then the end of the stream.
        client_io.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.expect("write");
        drop(client_io);
        let error = TlsAcceptor::from(config).accept(server_io).await.err().expect("cut off");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
