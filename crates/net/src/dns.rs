//! The one name user networking answers itself: `host.hako.internal`, the host
//! (10.0.2.2) as the guest sees it. Queries for it never reach libslirp, whose DNS
//! forwarding needs a host resolver that may be unreachable (a machine without
//! an outside network); every other query goes to libslirp as usual.
//!
//! [`intercept`] looks at a frame the guest sends: an IPv4/UDP DNS query to the
//! virtual name server, one question, class IN, for that name. It answers A (and
//! ANY) with the host's address and every other type with an empty NOERROR (the
//! name exists, without such records), so a resolver asking AAAA first does not
//! wait for a forward that cannot succeed.

use std::net::Ipv4Addr;

/// The name [`intercept`] answers.
pub const HOST_NAME: &str = "host.hako.internal";

/// The answer's time to live, in seconds.
const TTL: u32 = 60;

/// The MAC libslirp sends from for 10.0.2.2: 52:55 then the host's address.
const fn slirp_mac(host: Ipv4Addr) -> [u8; 6] {
    let a = host.octets();
    [0x52, 0x55, a[0], a[1], a[2], a[3]]
}

/// The reply frame to `frame` if it is a query for [`HOST_NAME`] sent to the name
/// server `dns`; the answer is `host`. `None` for every other frame.
pub fn intercept(frame: &[u8], dns: Ipv4Addr, host: Ipv4Addr) -> Option<Vec<u8>> {
    // Ethernet II, IPv4 (no VLAN tag: libslirp would not take one either).
    if frame.len() < 14 + 20 + 8 + 12 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl + 8 || total > ip.len() || fragment != 0 {
        return None;
    }
    if ip[9] != 17 || ip[16..20] != dns.octets() {
        return None;
    }
    let src_ip: [u8; 4] = ip[12..16].try_into().ok()?;
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if u16::from_be_bytes([udp[2], udp[3]]) != 53 || udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    let src_port = [udp[0], udp[1]];
    let answer = answer_query(&udp[8..udp_len], host)?;

    let mut src_mac: [u8; 6] = frame[0..6].try_into().ok()?;
    if src_mac[0] & 1 != 0 {
        src_mac = slirp_mac(host);
    }
    let mut out = Vec::with_capacity(14 + 20 + 8 + answer.len());
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&src_mac);
    out.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (20 + 8 + answer.len()) as u16;
    let mut iph = [0u8; 20];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&ip_len.to_be_bytes());
    iph[6] = 0x40; // Don't fragment.
    iph[8] = 64;
    iph[9] = 17;
    iph[12..16].copy_from_slice(&dns.octets());
    iph[16..20].copy_from_slice(&src_ip);
    let sum = checksum(&[&iph]);
    iph[10..12].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&iph);
    let udp_len = (8 + answer.len()) as u16;
    let mut udph = [0u8; 8];
    udph[0..2].copy_from_slice(&53u16.to_be_bytes());
    udph[2..4].copy_from_slice(&src_port);
    udph[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&dns.octets());
    pseudo[4..8].copy_from_slice(&src_ip);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let sum = match checksum(&[&pseudo, &udph, &answer]) {
        0 => 0xffff,
        s => s,
    };
    udph[6..8].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&udph);
    out.extend_from_slice(&answer);
    Some(out)
}

/// The DNS reply to `query` (a UDP payload) if it asks about [`HOST_NAME`].
fn answer_query(query: &[u8], host: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let count = |i: usize| u16::from_be_bytes([query[i], query[i + 1]]);
    // A standard query (QR 0, opcode 0) with one question and no answers.
    if flags & 0xf800 != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 {
        return None;
    }
    // The question's name, label by label (no compression in a question).
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(query.get(pos..pos + len)?);
        pos += len;
    }
    let wanted = HOST_NAME.split('.');
    if labels.len() != wanted.clone().count()
        || !labels
            .iter()
            .zip(wanted)
            .all(|(l, w)| l.eq_ignore_ascii_case(w.as_bytes()))
    {
        return None;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(pos + 2)?, *query.get(pos + 3)?]);
    if qclass != 1 {
        return None;
    }
    let question = &query[12..pos + 4];
    let with_address = qtype == 1 || qtype == 255;

    let mut out = Vec::with_capacity(12 + question.len() + 16);
    out.extend_from_slice(&query[0..2]);
    // QR, AA, the query's RD, RA; NOERROR.
    let reply_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080;
    out.extend_from_slice(&u16::to_be_bytes(reply_flags));
    out.extend_from_slice(&[0, 1, 0, u8::from(with_address), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if with_address {
        // The name as a pointer to the question's (offset 12), type A, class IN.
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&host.octets());
    }
    Some(out)
}

/// The Internet checksum (RFC 1071) over the concatenated `parts` (each but the
/// last of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
    const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const DNS_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 3];

    /// A DNS query for `name` of `qtype`, id 0x1234, RD set.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    /// The query in an Ethernet/IPv4/UDP frame from 10.0.2.15:40000 to 10.0.2.3:53.
    fn frame(dns_query: &[u8]) -> Vec<u8> {
        let mut f = DNS_MAC.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + dns_query.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0xab, 0xcd, 0, 0, 64, 17, 0, 0, 10, 0, 2, 15];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&DNS.octets());
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + dns_query.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // No UDP checksum, as IPv4 allows.
        f.extend_from_slice(dns_query);
        f
    }

    #[test]
    fn answers_a_for_the_host_name() {
        let q = query("Host.Hako.Internal", 1);
        let reply = intercept(&frame(&q), DNS, HOST).expect("intercepted");
        // Ethernet: back to the guest, from the MAC it sent to.
        assert_eq!(reply[0..6], GUEST_MAC);
        assert_eq!(reply[6..12], DNS_MAC);
        assert_eq!(reply[12..14], [0x08, 0x00]);
        let ip = &reply[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            reply.len() - 14
        );
        assert_eq!(ip[9], 17);
        assert_eq!(ip[12..16], [10, 0, 2, 3]);
        assert_eq!(ip[16..20], [10, 0, 2, 15]);
        assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum");
        let udp = &reply[34..];
        assert_eq!(udp[0..2], 53u16.to_be_bytes());
        assert_eq!(udp[2..4], 40000u16.to_be_bytes());
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
        let pseudo = [10, 0, 2, 3, 10, 0, 2, 15, 0, 17, 0, udp.len() as u8];
        assert_eq!(checksum(&[&pseudo, udp]), 0, "UDP checksum");
        let dns = &udp[8..];
        let mut want = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        want.extend_from_slice(&q[12..]);
        want.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 2, 2]);
        assert_eq!(dns, want.as_slice());
    }

    #[test]
    fn other_types_get_an_empty_answer() {
        let reply = intercept(&frame(&query(HOST_NAME, 28)), DNS, HOST).expect("AAAA");
        let dns = &reply[42..];
        assert_eq!(dns[2..8], [0x85, 0x80, 0, 1, 0, 0]);
        assert_eq!(dns.len(), 12 + HOST_NAME.len() + 2 + 4);
    }

    #[test]
    fn leaves_everything_else_to_slirp() {
        // Another name, a longer name, another server, a response, a truncated frame.
        assert!(intercept(&frame(&query("example.com", 1)), DNS, HOST).is_none());
        assert!(intercept(&frame(&query("a.host.hako.internal", 1)), DNS, HOST).is_none());
        assert!(intercept(&frame(&query("host.hako.internal", 1)), HOST, HOST).is_none());
        let mut response = query(HOST_NAME, 1);
        response[2] |= 0x80;
        assert!(intercept(&frame(&response), DNS, HOST).is_none());
        let f = frame(&query(HOST_NAME, 1));
        assert!(intercept(&f[..f.len() - 3], DNS, HOST).is_none());
        // A fragment.
        let mut f = frame(&query(HOST_NAME, 1));
        f[14 + 6] = 0x20;
        assert!(intercept(&f, DNS, HOST).is_none());
    }
}
