//! Large UDP datagrams for the IP fragment tests (`kpt-net udp-big`, `frag-tail` and the
//! `serve` side): a request of N bytes that the kernel fragments, answered by a reply of N
//! bytes that says which backend got it, how many bytes arrived and their hash, so the client
//! sees that the datagram reached one backend whole and the reply came back whole.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use serde_json::{Value, json};

/// First line of a large request; `serve` answers such datagrams with [`reply`].
const MAGIC: &[u8] = b"BIG\n";

/// FNV-1a, 64 bits: a hash of the received bytes the client can compare.
#[must_use]
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Byte `i` of a datagram's filler after its header: a pattern that shows a missing or
/// misplaced fragment.
#[expect(clippy::cast_possible_truncation, reason = "mod 251 fits a byte")]
fn filler(i: usize, seed: u8) -> u8 {
    ((i % 251) as u8).wrapping_add(seed)
}

/// A request of `size` bytes (at least the magic line); `seed` varies the payload.
#[must_use]
pub fn request(size: usize, seed: u8) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend((MAGIC.len()..size.max(MAGIC.len())).map(|i| filler(i, seed)));
    v
}

/// The server's answer to a large request from `peer`: as many bytes as arrived, starting
/// with `<name> <peer> <received length> <hash>\n`, then filler. `None` for other datagrams.
#[must_use]
pub fn reply(name: &str, peer: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    if !datagram.starts_with(MAGIC) {
        return None;
    }
    let mut v = format!("{name} {peer} {} {:016x}\n", datagram.len(), fnv(datagram)).into_bytes();
    let header = v.len();
    v.extend((header..datagram.len().max(header)).map(|i| filler(i, 0)));
    Some(v)
}

/// What a reply says: (backend name, the peer it saw), or why it does not match `request`.
///
/// # Errors
/// A description of the mismatch (length, hash, filler).
pub fn check(request: &[u8], answer: &[u8]) -> Result<(String, String), String> {
    let end = answer
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let header = String::from_utf8_lossy(&answer[..end]).into_owned();
    let parts: Vec<&str> = header.split_whitespace().collect();
    let [name, peer, len, hash] = parts[..] else {
        return Err(format!("bad header {header:?}"));
    };
    if len != request.len().to_string() {
        return Err(format!("backend got {len} of {} bytes", request.len()));
    }
    if hash != format!("{:016x}", fnv(request)) {
        return Err("backend got other bytes than sent".into());
    }
    if answer.len() != request.len() {
        return Err(format!(
            "reply of {} bytes, expected {}",
            answer.len(),
            request.len()
        ));
    }
    if (end + 1..answer.len()).any(|i| answer[i] != filler(i, 0)) {
        return Err("reply payload corrupted".into());
    }
    Ok((name.to_string(), peer.to_string()))
}

/// Lets the kernel fragment datagrams larger than the path MTU (no DF bit).
fn allow_fragments(sock: &UdpSocket) -> std::io::Result<()> {
    let val: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: valid fd, option value of the documented type and size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const val).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("len"),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `udp-big ADDR --size N --count C [--sport P]`: C requests of N bytes (from one socket on
/// port P if given, else a new socket each); one JSON line each:
/// `{"ok":true,"name":..,"seen_peer":..,"from":..}` or `{"ok":false,"error":..}`.
/// Returns the exit code.
#[must_use]
pub fn client(addr: &str, size: usize, count: usize, sport: u16) -> i32 {
    let target: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let mut failures = 0;
    let open = || -> std::io::Result<UdpSocket> {
        let sock = UdpSocket::bind(("0.0.0.0", sport))?;
        allow_fragments(&sock)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(sock)
    };
    let mut shared = None;
    for i in 0..count {
        let seed = u8::try_from(i % 256).expect("fits");
        let req = request(size, seed);
        let res = (|| {
            let sock = if sport == 0 {
                open()?
            } else {
                if shared.is_none() {
                    shared = Some(open()?);
                }
                shared.as_ref().expect("opened").try_clone()?
            };
            sock.send_to(&req, target)?;
            let mut buf = vec![0u8; 65_536];
            let (n, from) = sock.recv_from(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, from))
        })();
        let line: Value = match res {
            Ok((answer, from)) => match check(&req, &answer) {
                Ok((name, peer)) => {
                    json!({"ok": true, "name": name, "seen_peer": peer, "from": from.to_string()})
                }
                Err(e) => json!({"ok": false, "error": e, "from": from.to_string()}),
            },
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        };
        if line["ok"] != true {
            failures += 1;
        }
        println!("{line}");
    }
    i32::from(failures > 0)
}

/// The IPv4 header of a lone later fragment: UDP, offset 1480 bytes, last fragment, to
/// `target` (source and checksum are filled in by the kernel).
#[must_use]
pub fn tail_fragment(target: SocketAddrV4, id: u16, payload: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload).expect("small fragment");
    let mut p = vec![0x45, 0];
    p.extend(total.to_be_bytes());
    p.extend(id.to_be_bytes());
    // Offset 185 × 8 = 1,480 bytes, no flags: the last fragment of a 1,488-byte datagram.
    p.extend(185u16.to_be_bytes());
    p.extend([64, 17, 0, 0]);
    p.extend([0; 4]);
    p.extend(target.ip().octets());
    p.extend((0..payload).map(|i| filler(i, 7)));
    p
}

/// `frag-tail ADDR --count C`: sends C lone later fragments (no first fragment) to ADDR's
/// address through a raw socket. Returns the exit code.
#[must_use]
pub fn send_tails(addr: &str, count: usize) -> i32 {
    let target: SocketAddrV4 = addr.parse().expect("ADDR is ip:port");
    // SAFETY: plain socket(2) call; IPPROTO_RAW implies IP_HDRINCL.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        eprintln!("raw socket: {}", std::io::Error::last_os_error());
        return 1;
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits"),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(target.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).expect("len");
    let mut code = 0;
    for i in 0..count {
        let id = 0x7000 + u16::try_from(i % 4096).expect("fits");
        let pkt = tail_fragment(target, id, 100);
        // SAFETY: valid fd, buffer and sockaddr_in of the given lengths.
        let rc = unsafe {
            libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&raw const sa).cast(),
                len,
            )
        };
        if rc < 0 {
            eprintln!("sendto: {}", std::io::Error::last_os_error());
            code = 1;
        }
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    println!("{}", json!({"sent": count, "ok": code == 0}));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_matches_request_and_detects_damage() {
        let req = request(3000, 3);
        assert_eq!(req.len(), 3000);
        let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let ans = reply("b1", peer, &req).expect("a large request");
        assert_eq!(ans.len(), 3000);
        assert_eq!(
            check(&req, &ans),
            Ok(("b1".to_string(), "192.0.2.1:40000".to_string()))
        );
        // The backend got a datagram missing its last fragment.
        let short = reply("b1", peer, &req[..1480]).unwrap();
        assert!(check(&req, &short).unwrap_err().contains("1480 of 3000"));
        // A reply missing its tail.
        assert!(check(&req, &ans[..2000]).is_err());
        // Other datagrams are not large requests.
        assert!(reply("b1", peer, b"hello\n").is_none());
    }

    #[test]
    fn tail_fragment_is_a_later_fragment() {
        let p = tail_fragment("10.96.0.10:53".parse().unwrap(), 0x1234, 100);
        assert_eq!(p.len(), 120);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 120);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0x1234);
        assert_eq!(u16::from_be_bytes([p[6], p[7]]) & 0x1fff, 185);
        assert_eq!(p[9], 17);
        assert_eq!(&p[16..20], &[10, 96, 0, 10]);
    }
}
