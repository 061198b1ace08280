//! Privileged: load balancing stays correct when the client's kernel leaves the L4 checksum
//! to the device (`ethtool -K eth0 tx on`: packets cross the veth as CHECKSUM_PARTIAL, their
//! checksum field holding only the pseudo-header sum) as well as with full checksums
//! (`tx off`), through a LoadBalancer IP with XDP (driver and generic mode) and with tc doing
//! the LB. The node's veth towards the backend and the uplink have checksum offload off,
//! so the kernel finishes every translated packet's checksum in software on its way out
//! (as a real NIC would): a wrong checksum field makes the receiving kernel drop the packet,
//! so delivery proves the rewrite right, and the payload hashes prove the data intact.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use kproxy_tests::{
    NetNs, bigudp,
    lab::{Ep, Lab, Svc},
    privileged, sh,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 150);
const TIMEOUT: Duration = Duration::from_secs(3);

/// Switches transmit checksum offload of `dev` in `ns`.
fn tx_offload(ns: &NetNs, dev: &str, on: bool) {
    sh(ns
        .cmd("ethtool")
        .args(["-K", dev, "tx", if on { "on" } else { "off" }]));
}

/// A TCP connection through the LB IP: the greeting, then `lines` lines of `len` bytes of
/// varying text echoed back byte for byte. Returns the greeting.
fn tcp_echo(ns: &NetNs, lines: usize, len: usize) -> Result<String, String> {
    ns.run(|| {
        let dst = SocketAddr::V4(SocketAddrV4::new(LB_IP, 80));
        let stream =
            TcpStream::connect_timeout(&dst, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut w = stream.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(stream);
        let mut greeting = String::new();
        r.read_line(&mut greeting)
            .map_err(|e| format!("greeting: {e}"))?;
        let mut sent = Vec::new();
        for i in 0..lines {
            let line: String = (0..len)
                .map(|j| char::from(b'a' + u8::try_from((i * 7 + j * 13) % 26).unwrap_or(0)))
                .collect();
            w.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            sent.extend_from_slice(line.as_bytes());
        }
        let mut got = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| format!("echo: {e}"))?;
            got.extend_from_slice(line.trim_end().as_bytes());
        }
        if bigudp::fnv(&got) != bigudp::fnv(&sent) {
            return Err(format!(
                "echo differs: {} of {} bytes",
                got.len(),
                sent.len()
            ));
        }
        Ok(greeting)
    })
}

/// `count` datagrams of `size` bytes through the LB IP, each answered with the hash of what
/// the backend received, checked against what was sent.
fn udp_echo(ns: &NetNs, size: usize, count: u8) -> Result<(), String> {
    ns.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65_536];
        for seed in 0..count {
            let req = bigudp::request(size, seed);
            sock.send_to(&req, (LB_IP, 53)).map_err(|e| e.to_string())?;
            let (n, from) = sock
                .recv_from(&mut buf)
                .map_err(|e| format!("datagram {seed}: {e}"))?;
            if from != SocketAddr::from((LB_IP, 53)) {
                return Err(format!("answer from {from}"));
            }
            bigudp::check(&req, &buf[..n]).map_err(|e| format!("datagram {seed}: {e}"))?;
        }
        Ok(())
    })
}

fn lb_survives_offloads(xdp_mode: &str, lb_mode: &str) {
    let mut lab = Lab::new(1);
    lab.set_services(&[Svc {
        lb_ip: Some(LB_IP),
        ..Svc::cluster_ip("offload", VIP, vec![Ep::ready(0)])
    }]);
    // The node finishes checksums in software towards the backend and the client.
    tx_offload(&lab.node, "vb0", false);
    tx_offload(&lab.node, "up0", false);
    lab.start_kproxy(xdp_mode, lb_mode);
    for client_tx in [true, false] {
        tx_offload(&lab.client, "eth0", client_tx);
        // Backend replies: partial checksums too, or full ones.
        tx_offload(&lab.backends[0], "eth0", client_tx);
        let what = format!(
            "{xdp_mode}/{lb_mode}, client tx {}",
            if client_tx { "on" } else { "off" }
        );
        let greeting =
            tcp_echo(&lab.client, 50, 1000).unwrap_or_else(|e| panic!("{what}: TCP: {e}"));
        assert!(greeting.starts_with("b0 192.0.2.1:"), "{what}: {greeting}");
        for size in [200, 1400] {
            udp_echo(&lab.client, size, 5).unwrap_or_else(|e| panic!("{what}: UDP {size}: {e}"));
        }
    }
}

#[test]
fn privileged_offloads_xdp_driver() {
    if privileged("privileged_offloads_xdp_driver") {
        lb_survives_offloads("driver", "xdp");
    }
}

#[test]
fn privileged_offloads_xdp_generic() {
    if privileged("privileged_offloads_xdp_generic") {
        lb_survives_offloads("generic", "xdp");
    }
}

#[test]
fn privileged_offloads_tc() {
    if privileged("privileged_offloads_tc") {
        lb_survives_offloads("driver", "tc");
    }
}
