//! Datagrams in batches on a blocking socket: [`Batch::receive`] waits for
//! one datagram and takes every other one already queued, and
//! [`send_all`] sends a batch of answers. On Linux each is one system call
//! (`recvmmsg` with `MSG_WAITFORONE`, `sendmmsg`), which halves the system
//! calls per request against `recv_from` and `send_to` and lets a batch
//! share one database transaction. Elsewhere a batch is one datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use super::message::MAX_DATAGRAM;

/// How many datagrams one receive takes at most.
pub const BATCH_SIZE: usize = 32;

/// Receive buffers for up to [`BATCH_SIZE`] datagrams and their senders.
pub struct Batch {
    buffers: Vec<Box<[u8]>>,
    received: Vec<(usize, SocketAddr)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            buffers: (0..BATCH_SIZE)
                .map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice())
                .collect(),
            received: Vec::with_capacity(BATCH_SIZE),
        }
    }
}

impl Batch {
    /// Waits for at least one datagram (or the socket's read timeout, an
    /// error of kind `WouldBlock` or `TimedOut`), then takes the ones
    /// already queued; returns how many it holds. A datagram longer than
    /// [`MAX_DATAGRAM`] is cut there, as pyzord's `recvfrom(8192)` cuts it.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received.clear();
        self.receive_into(socket)?;
        Ok(self.received.len())
    }

    /// The datagrams of the last receive and who sent them.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.received
            .iter()
            .zip(&self.buffers)
            .map(|(&(length, peer), buffer)| (&buffer[..length], peer))
    }

    #[cfg(target_os = "linux")]
    fn receive_into(&mut self, socket: &UdpSocket) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: zeroed sockaddr_storage, iovec and mmsghdr are valid
        // values (plain C structs of integers and null pointers).
        let mut addresses: [libc::sockaddr_storage; BATCH_SIZE] = unsafe { std::mem::zeroed() };
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(addresses.iter_mut())
            .map(|(iovec, address)| {
                let length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                message_header(address, length, iovec)
            })
            .collect();
        // SAFETY: every header points at a live buffer of the stated length
        // and a live sockaddr_storage, all outliving the call; the kernel
        // writes at most `headers.len()` entries.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as _,
                libc::MSG_WAITFORONE as _,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        for (header, address) in headers.iter().zip(&addresses).take(count as usize) {
            // A sender we cannot name (not IPv4 or IPv6) cannot be answered.
            if let Some(peer) = socket_addr(address) {
                let length = (header.msg_len as usize).min(MAX_DATAGRAM);
                self.received.push((length, peer));
            }
        }
        // Keep the buffers in the order of `received`: move each datagram
        // whose sender was skipped out of the way (rare; usually a no-op).
        if self.received.len() < count as usize {
            let mut kept = 0;
            for (index, address) in addresses.iter().take(count as usize).enumerate() {
                if socket_addr(address).is_some() {
                    self.buffers.swap(kept, index);
                    kept += 1;
                }
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn receive_into(&mut self, socket: &UdpSocket) -> io::Result<()> {
        let (length, peer) = socket.recv_from(&mut self.buffers[0])?;
        self.received.push((length, peer));
        Ok(())
    }
}

/// Sends every answer to its peer. An answer the system refuses (a peer
/// that cannot be reached) is logged and skipped; the others still go.
pub fn send_all(socket: &UdpSocket, answers: &[(SocketAddr, Vec<u8>)]) {
    let mut rest = answers;
    while !rest.is_empty() {
        match send_some(socket, rest) {
            Ok(sent) => rest = &rest[sent.max(1).min(rest.len())..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::debug!(peer = %rest[0].0, %error, "cannot send the response");
                rest = &rest[1..];
            }
        }
    }
}

/// Sends a prefix of `answers`; returns how many went (at least one, or
/// the error of the first).
#[cfg(target_os = "linux")]
fn send_some(socket: &UdpSocket, answers: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let answers = &answers[..answers.len().min(BATCH_SIZE)];
    let mut addresses: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
        answers.iter().map(|(peer, _)| sockaddr(peer)).collect();
    let mut iovecs: Vec<libc::iovec> = answers
        .iter()
        .map(|(_, bytes)| libc::iovec {
            // The kernel only reads through it (sendmmsg).
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .zip(addresses.iter_mut())
        .map(|(iovec, (address, length))| message_header(address, *length, iovec))
        .collect();
    // SAFETY: every header points at live memory of the stated lengths,
    // all outliving the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as _,
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(not(target_os = "linux"))]
fn send_some(socket: &UdpSocket, answers: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    let (peer, bytes) = &answers[0];
    socket.send_to(bytes, peer)?;
    Ok(1)
}

/// One datagram's entry for `recvmmsg` or `sendmmsg`: its peer's address
/// (`length` bytes of it used) and its one buffer.
#[cfg(target_os = "linux")]
fn message_header(
    address: &mut libc::sockaddr_storage,
    length: libc::socklen_t,
    iovec: &mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: a zeroed mmsghdr (integers and null pointers) is a valid value.
    let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
    header.msg_hdr.msg_name = (address as *mut libc::sockaddr_storage).cast();
    header.msg_hdr.msg_namelen = length;
    header.msg_hdr.msg_iov = iovec;
    header.msg_hdr.msg_iovlen = 1;
    header
}

/// The sender's address as the kernel wrote it, if IPv4 or IPv6.
#[cfg(target_os = "linux")]
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A peer's address for the kernel.
#[cfg(target_os = "linux")]
fn sockaddr(peer: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match peer {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a
            // sockaddr_in, and nothing else refers to it.
            let out = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = v4.port().to_be();
            out.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let out = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_flowinfo = v6.flowinfo();
            out.sin6_addr.s6_addr = v6.ip().octets();
            out.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_takes_every_queued_datagram_and_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for (index, client) in clients.iter().enumerate() {
            client
                .send_to(
                    format!("request {index}").as_bytes(),
                    server.local_addr().expect("addr"),
                )
                .expect("send");
        }
        let mut batch = Batch::default();
        let mut seen = Vec::new();
        while seen.len() < clients.len() {
            batch.receive(&server).expect("receive");
            let answers: Vec<(SocketAddr, Vec<u8>)> = batch
                .datagrams()
                .map(|(data, peer)| (peer, [b"answer to ".as_slice(), data].concat()))
                .collect();
            seen.extend(answers.iter().map(|(peer, _)| *peer));
            send_all(&server, &answers);
        }
        for (index, client) in clients.iter().enumerate() {
            assert!(seen.contains(&client.local_addr().expect("addr")));
            let mut buffer = [0u8; 64];
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let length = client.recv(&mut buffer).expect("answer");
            assert_eq!(
                &buffer[..length],
                format!("answer to request {index}").as_bytes()
            );
        }
    }

    #[test]
    fn a_long_datagram_is_cut_at_pyzords_read_size() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(
                &vec![b'x'; MAX_DATAGRAM + 100],
                server.local_addr().expect("addr"),
            )
            .expect("send");
        let mut batch = Batch::default();
        assert_eq!(batch.receive(&server).expect("receive"), 1);
        let (data, _) = batch.datagrams().next().expect("one datagram");
        assert_eq!(data.len(), MAX_DATAGRAM);
    }

    #[test]
    fn ipv6_senders_are_answered() {
        let server = UdpSocket::bind("[::1]:0").expect("the IPv6 test needs an IPv6 loopback");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let client = UdpSocket::bind("[::1]:0").expect("bind");
        client
            .send_to(b"ping", server.local_addr().expect("addr"))
            .expect("send");
        let mut batch = Batch::default();
        batch.receive(&server).expect("receive");
        let answers: Vec<_> = batch
            .datagrams()
            .map(|(data, peer)| (peer, data.to_vec()))
            .collect();
        assert_eq!(answers[0].0, client.local_addr().expect("addr"));
        send_all(&server, &answers);
        let mut buffer = [0u8; 16];
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(client.recv(&mut buffer).expect("answer"), 4);
    }
}
