use super::*;

/// Full Internet checksum of `bytes` (even length), as a receiver verifies it: 0 when the
/// bytes include a correct checksum.
#[expect(
    clippy::cast_possible_truncation,
    reason = "folded until it fits 16 bits"
)]
fn verify(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn bytes(h: &IcmpErr) -> &[u8] {
    // SAFETY: a repr(C) struct of integers without padding (56 bytes), read as bytes.
    unsafe {
        core::slice::from_raw_parts(
            core::ptr::from_ref(h).cast::<u8>(),
            core::mem::size_of::<IcmpErr>(),
        )
    }
}

fn ip(saddr: [u8; 4], daddr: [u8; 4], protocol: u8, tot_len: u16) -> IpHdr {
    IpHdr {
        version_ihl: 0x45,
        tos: 0,
        tot_len: tot_len.to_be(),
        id: 0x1c46u16.to_be(),
        frag_off: 0x4000u16.to_be(),
        ttl: 63,
        protocol,
        check: 0,
        saddr: u32::from_ne_bytes(saddr),
        daddr: u32::from_ne_bytes(daddr),
    }
}

const CLIENT: [u8; 4] = [192, 0, 2, 1];
const VIP: [u8; 4] = [172, 30, 0, 1];
const BACKEND: [u8; 4] = [10, 244, 1, 2];
const ROUTER: [u8; 4] = [198, 51, 100, 1];

/// An ICMP error from `from` to `to` quoting `quoted` (UDP with a checksum), all checksums
/// computed from scratch.
fn error(from: [u8; 4], to: [u8; 4], quoted: IpHdr, sport: u16, dport: u16) -> IcmpErr {
    let mut h = IcmpErr {
        ip: ip(from, to, IPPROTO_ICMP, 56),
        icmp_type: ICMP_DEST_UNREACH,
        code: 3,
        check: 0,
        rest: 0,
        inner: quoted,
        sport: sport.to_be(),
        dport: dport.to_be(),
        l4_word2: 8u16.to_be(),
        l4_word3: 0x1234u16.to_be(),
    };
    h.inner.check = verify(&bytes(&h)[28..48]).to_be();
    h.ip.check = verify(&bytes(&h)[..20]).to_be();
    h.check = verify(&bytes(&h)[20..]).to_be();
    h
}

fn assert_checksums_valid(h: &IcmpErr) {
    let b = bytes(h);
    assert_eq!(verify(&b[..20]), 0, "outer IP checksum");
    assert_eq!(verify(&b[20..]), 0, "ICMP checksum");
    assert_eq!(verify(&b[28..48]), 0, "quoted IP checksum");
}

#[test]
fn error_from_the_backend_comes_from_the_frontend() {
    // Port unreachable from the backend about client:40000 -> backend:8080.
    let quoted = ip(CLIENT, BACKEND, IPPROTO_UDP, 36);
    let mut h = error(BACKEND, CLIENT, quoted, 40000, 8080);
    assert!(is_translatable_error(&h));
    let udp_before = h.l4_word3;
    rewrite(&mut h, Quoted::Dst, u32::from_ne_bytes(VIP), 53u16.to_be());
    assert_checksums_valid(&h);
    assert_eq!(h.ip.saddr, u32::from_ne_bytes(VIP), "sent by the frontend");
    assert_eq!(h.ip.daddr, u32::from_ne_bytes(CLIENT));
    assert_eq!(h.inner.daddr, u32::from_ne_bytes(VIP));
    assert_eq!(u16::from_be(h.dport), 53);
    assert_eq!(u16::from_be(h.sport), 40000);
    assert_ne!(
        h.l4_word3, udp_before,
        "quoted UDP checksum follows the tuple"
    );
}

#[test]
fn error_from_a_router_keeps_its_source() {
    let quoted = ip(CLIENT, BACKEND, IPPROTO_TCP, 1500);
    let mut h = error(ROUTER, CLIENT, quoted, 40000, 8080);
    h.code = 4;
    h.check = 0;
    h.check = verify(&bytes(&h)[20..]).to_be();
    rewrite(&mut h, Quoted::Dst, u32::from_ne_bytes(VIP), 80u16.to_be());
    assert_checksums_valid(&h);
    assert_eq!(h.ip.saddr, u32::from_ne_bytes(ROUTER));
    assert_eq!(h.inner.daddr, u32::from_ne_bytes(VIP));
    assert_eq!(u16::from_be(h.dport), 80);
}

#[test]
fn error_about_a_reply_goes_to_the_backend() {
    // Fragmentation needed from a router on the client's side, about VIP:80 -> client.
    let quoted = ip(VIP, CLIENT, IPPROTO_TCP, 1500);
    let mut h = error(ROUTER, VIP, quoted, 80, 40000);
    rewrite(
        &mut h,
        Quoted::Src,
        u32::from_ne_bytes(BACKEND),
        8080u16.to_be(),
    );
    assert_checksums_valid(&h);
    assert_eq!(
        h.ip.daddr,
        u32::from_ne_bytes(BACKEND),
        "delivered to the backend"
    );
    assert_eq!(h.ip.saddr, u32::from_ne_bytes(ROUTER));
    assert_eq!(h.inner.saddr, u32::from_ne_bytes(BACKEND));
    assert_eq!(u16::from_be(h.sport), 8080);
    assert_eq!(u16::from_be(h.dport), 40000);
}

#[test]
fn a_translated_quote_matches_no_key_of_its_flow() {
    // After either rewrite, the reversed quote is neither the flow's REPLY key
    // (backend -> client) nor its FORWARD key (client -> VIP).
    let fwd = (u32::from_ne_bytes(CLIENT), u32::from_ne_bytes(VIP));
    let reply = (u32::from_ne_bytes(BACKEND), u32::from_ne_bytes(CLIENT));
    let quoted = ip(CLIENT, BACKEND, IPPROTO_UDP, 36);
    let mut a = error(BACKEND, CLIENT, quoted, 40000, 8080);
    rewrite(&mut a, Quoted::Dst, u32::from_ne_bytes(VIP), 53u16.to_be());
    let quoted = ip(VIP, CLIENT, IPPROTO_UDP, 36);
    let mut b = error(ROUTER, VIP, quoted, 53, 40000);
    rewrite(
        &mut b,
        Quoted::Src,
        u32::from_ne_bytes(BACKEND),
        8080u16.to_be(),
    );
    for h in [&a, &b] {
        for dir in [ct_dir::REPLY, ct_dir::FORWARD] {
            let k = reversed_quote(h, dir);
            assert_ne!((k.saddr, k.daddr), fwd);
            assert_ne!((k.saddr, k.daddr), reply);
        }
    }
}

#[test]
fn only_errors_quoting_ports_are_translated() {
    let quoted = ip(CLIENT, BACKEND, IPPROTO_UDP, 36);
    let good = error(BACKEND, CLIENT, quoted, 40000, 8080);
    assert!(is_translatable_error(&good));
    let mut echo = error(BACKEND, CLIENT, ip(CLIENT, BACKEND, IPPROTO_UDP, 36), 1, 2);
    echo.icmp_type = ICMP_ECHO;
    assert!(!is_translatable_error(&echo));
    let mut later = error(BACKEND, CLIENT, ip(CLIENT, BACKEND, IPPROTO_UDP, 36), 1, 2);
    later.inner.frag_off = 0x00b9u16.to_be();
    assert!(
        !is_translatable_error(&later),
        "a later fragment quotes no ports"
    );
    let mut options = error(BACKEND, CLIENT, ip(CLIENT, BACKEND, IPPROTO_UDP, 36), 1, 2);
    options.inner.version_ihl = 0x46;
    assert!(!is_translatable_error(&options));
    let mut icmp = error(BACKEND, CLIENT, ip(CLIENT, BACKEND, IPPROTO_ICMP, 36), 1, 2);
    icmp.icmp_type = ICMP_TIME_EXCEEDED;
    assert!(!is_translatable_error(&icmp));
}

#[test]
fn zero_udp_checksum_stays_zero() {
    let quoted = ip(CLIENT, BACKEND, IPPROTO_UDP, 36);
    let mut h = error(BACKEND, CLIENT, quoted, 40000, 8080);
    h.l4_word3 = 0;
    h.check = 0;
    h.check = verify(&bytes(&h)[20..]).to_be();
    rewrite(&mut h, Quoted::Dst, u32::from_ne_bytes(VIP), 53u16.to_be());
    assert_eq!(h.l4_word3, 0);
    assert_checksums_valid(&h);
}
