//! Gratuitous ARP: a node that starts announcing LoadBalancer IPs tells the segment at once,
//! so clients re-point their neighbour entries instead of probing the previous node first.

use std::{io, net::Ipv4Addr};

/// The ARP request announcing `addr` at `mac` (sender and target address both `addr`,
/// broadcast), as an Ethernet frame.
#[must_use]
pub fn frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Sends one gratuitous ARP per address out of `iface`.
///
/// # Errors
/// The interface has no index or MAC, or the packet socket cannot be opened or sent on.
pub fn announce(iface: &str, addrs: &[Ipv4Addr]) -> io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    let mac = crate::netif::mac_addr(iface)
        .ok_or_else(|| io::Error::other(format!("{iface} has no MAC address")))?;
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = 0x0806u16.to_be();
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid value for every field.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or_default();
    to.sll_protocol = proto;
    to.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for addr in addrs {
        let f = frame(mac, *addr);
        // SAFETY: the buffer and the address outlive the call; their lengths are given.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                f.as_ptr().cast(),
                f.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or_default(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_request_layout() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = frame(mac, Ipv4Addr::new(172, 30, 0, 5));
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &mac, "sender hardware address");
        assert_eq!(&f[28..32], &[172, 30, 0, 5], "sender protocol address");
        assert_eq!(&f[32..38], &[0; 6], "target hardware address");
        assert_eq!(&f[38..42], &[172, 30, 0, 5], "target = sender: gratuitous");
    }
}
