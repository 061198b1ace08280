//! Interface address lookup (NodePort frontends on the uplink's addresses, the uplink's MAC
//! for ARP replies).

use std::{ffi::CStr, net::Ipv4Addr};

/// Calls `f` with each address getifaddrs reports for `iface` in `family` (in the caller's
/// network namespace), until it returns `true`.
fn for_each_addr(iface: &str, family: i32, mut f: impl FnMut(&libc::sockaddr) -> bool) {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points to a sockaddr of family sa_family.
        let addr = unsafe { &*ifa.ifa_addr };
        if name.to_bytes() == iface.as_bytes() && i32::from(addr.sa_family) == family && f(addr) {
            break;
        }
    }
    // SAFETY: head came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
}

/// The IPv4 addresses configured on `iface` (empty if it has none or does not exist).
#[must_use]
pub fn ipv4_addrs(iface: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for_each_addr(iface, libc::AF_INET, |sa| {
        // SAFETY: AF_INET addresses are sockaddr_in; read as a copy, which needs no alignment.
        let sin = unsafe {
            std::ptr::from_ref(sa)
                .cast::<libc::sockaddr_in>()
                .read_unaligned()
        };
        out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        false
    });
    out
}

/// The Ethernet address of `iface` (`None` if it has none, e.g. a tun device, or does not
/// exist), from its link-layer (AF_PACKET) entry.
#[must_use]
pub fn mac_addr(iface: &str) -> Option<[u8; 6]> {
    let mut found = None;
    for_each_addr(iface, libc::AF_PACKET, |sa| {
        // SAFETY: AF_PACKET entries are sockaddr_ll; read as a copy, which needs no alignment.
        let ll = unsafe {
            std::ptr::from_ref(sa)
                .cast::<libc::sockaddr_ll>()
                .read_unaligned()
        };
        let a = ll.sll_addr;
        let mac = [a[0], a[1], a[2], a[3], a[4], a[5]];
        if ll.sll_halen == 6 && mac != [0; 6] {
            found = Some(mac);
        }
        true
    });
    found
}

/// `struct ethtool_drvinfo` from linux/ethtool.h.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 3;

/// The kernel driver behind `iface` (e.g. "veth", "virtio_net"), via ETHTOOL_GDRVINFO.
#[must_use]
pub fn driver(iface: &str) -> Option<String> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    ifr.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: a datagram socket only used for the ioctl, closed below; `ifr` points to
    // `info`, which outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &raw mut ifr);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
