//! Sends hand-made (often malformed) frames out of an interface, for datapath robustness
//! tests: `kpt-raw IFACE DST_MAC SRC_IP DST_IP DST_PORT CASE...`. Cases:
//! `truncated-ip`, `bad-ihl`, `truncated-tcp`, `ip-options-syn`, `fragment-udp`,
//! `icmp-error`, `unknown-proto`, `tiny-frame`.

use std::{ffi::CString, net::Ipv4Addr};

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded above into 16 bits.
    !u16::try_from(sum).expect("folded to 16 bits")
}

struct Ctx {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
}

impl Ctx {
    fn eth(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    /// IPv4 header with `options` (multiple of 4 bytes), correct checksum.
    fn ip(&self, proto: u8, payload_len: usize, frag: u16, options: &[u8]) -> Vec<u8> {
        let ihl = 5 + options.len() / 4;
        let total = ihl * 4 + payload_len;
        let mut h = vec![0x40 | u8::try_from(ihl).unwrap(), 0];
        h.extend_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(options);
        let c = csum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    fn tcp_syn(&self) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&40000u16.to_be_bytes());
        t.extend_from_slice(&self.port.to_be_bytes());
        t.extend_from_slice(&1000u32.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&t);
        let c = csum(&pseudo, 0);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    fn frame(&self, case: &str) -> Vec<u8> {
        let mut f = self.eth();
        match case {
            // Ethernet says IPv4, but only 10 bytes of IP header follow.
            "truncated-ip" => f.extend_from_slice(&self.ip(6, 0, 0, &[])[..10]),
            // IHL 3 (< 5): invalid.
            "bad-ihl" => {
                let mut ip = self.ip(6, 20, 0, &[]);
                ip[0] = 0x43;
                f.extend(ip);
                f.extend(self.tcp_syn());
            }
            // A full IP header claiming TCP, but only 8 bytes of TCP header.
            "truncated-tcp" => {
                f.extend(self.ip(6, 8, 0, &[]));
                f.extend_from_slice(&self.tcp_syn()[..8]);
            }
            // A valid SYN whose IP header carries 4 bytes of options (NOPs + EOL).
            "ip-options-syn" => {
                f.extend(self.ip(6, 20, 0, &[1, 1, 1, 0]));
                f.extend(self.tcp_syn());
            }
            // First fragment of a UDP datagram (MF set): must not be translated.
            "fragment-udp" => {
                let mut udp = Vec::new();
                udp.extend_from_slice(&40001u16.to_be_bytes());
                udp.extend_from_slice(&self.port.to_be_bytes());
                udp.extend_from_slice(&[0, 100, 0, 0]);
                udp.extend_from_slice(&[0xab; 16]);
                f.extend(self.ip(17, udp.len(), 0x2000, &[]));
                f.extend(udp);
            }
            // ICMP port unreachable quoting a packet to the service.
            "icmp-error" => {
                let quoted_ip = self.ip(17, 8, 0, &[]);
                let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
                icmp.extend_from_slice(&quoted_ip);
                icmp.extend_from_slice(&[0x9c, 0x41, 0, 53, 0, 8, 0, 0]);
                let c = csum(&icmp, 0);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                f.extend(self.ip(1, icmp.len(), 0, &[]));
                f.extend(icmp);
            }
            // IP protocol 253 (experimental), with some payload.
            "unknown-proto" => {
                f.extend(self.ip(253, 24, 0, &[]));
                f.extend_from_slice(&[0x55; 24]);
            }
            // Nothing but an Ethernet header and two bytes.
            "tiny-frame" => f.extend_from_slice(&[0x45, 0x00]),
            other => panic!("unknown case {other}"),
        }
        f
    }
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("hex MAC"))
        .collect();
    v.try_into().expect("6-byte MAC")
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        a.len() >= 6,
        "usage: kpt-raw IFACE DST_MAC SRC_IP DST_IP DST_PORT CASE..."
    );
    let iface = CString::new(a[0].as_str()).expect("iface");
    let src_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", a[0]))
        .map_or([2, 0, 0, 0, 0, 1], |s| mac(s.trim()));
    let ctx = Ctx {
        src_mac,
        dst_mac: mac(&a[1]),
        src: a[2].parse().expect("SRC_IP"),
        dst: a[3].parse().expect("DST_IP"),
        port: a[4].parse().expect("DST_PORT"),
    };
    // SAFETY: plain socket/sendto calls with valid buffers and lengths.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(
                u16::try_from(libc::ETH_P_ALL)
                    .expect("ETH_P_ALL fits")
                    .to_be(),
            ),
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let ifindex = libc::if_nametoindex(iface.as_ptr());
        assert!(ifindex > 0, "no interface {}", a[0]);
        for case in &a[5..] {
            let frame = ctx.frame(case);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits");
            sll.sll_ifindex = i32::try_from(ifindex).unwrap();
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&ctx.dst_mac);
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            );
            assert!(n >= 0, "send {case}: {}", std::io::Error::last_os_error());
            println!("sent {case} ({} bytes)", frame.len());
        }
        libc::close(fd);
    }
}
