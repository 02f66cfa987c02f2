//! Fuzzes `host::parse` and `host::canonical`: the one canonical host that every host
//! comparison (access rules, redirect hosts, forward-auth, Origin checks, cookie domain) uses,
//! and the screen's test of whether a Host header is a host at all.
//!
//! The input is the bytes of a Host header (`host[:port]`). Besides structural properties of
//! the canonical form, what is accepted is checked against the WHATWG URL host parser (the
//! `url` crate, as browsers read hosts): every host accepted here is a host there, with the
//! same serialization.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use sessiongate::http::host::{Origin, canonical, parse};

/// The canonical form's own rules, written out: lower case, no trailing dot, labels of 1 to
/// 63 letters, digits, `-` or `_`, at most 253 bytes; or an IPv6 literal in brackets.
fn looks_canonical(c: &str) -> bool {
    if let Some(inner) = c.strip_prefix('[') {
        return inner.ends_with(']')
            && inner[..inner.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b":.".contains(&b));
    }
    !c.is_empty()
        && c.len() <= 253
        && c.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
        })
}

fuzz_target!(|input: &[u8]| {
    let Ok(authority) = parse(input) else {
        // A refused authority stays refused however it is spelled around the port.
        assert!(canonical(input).is_err());
        return;
    };
    let host: &str = &authority.host;
    assert_eq!(canonical(input).as_deref(), Ok(host), "{input:?}");
    assert!(looks_canonical(host), "{input:?} -> {host:?}");
    assert!(!host.ends_with('.'), "{input:?} -> {host:?}");
    assert!(
        !host.contains(':') || host.starts_with('['),
        "{input:?} -> {host:?} keeps a port"
    );

    // Idempotent, valid by the same function, and borrowed: a canonical host costs nothing.
    match parse(host.as_bytes()) {
        Ok(again) => {
            assert!(
                matches!(again.host, Cow::Borrowed(h) if h == host),
                "{input:?} -> {host:?} -> {:?}",
                again.host
            );
            assert_eq!(again.port, None, "{host:?}");
        }
        Err(e) => panic!("{input:?} -> {host:?} is refused: {e:?}"),
    }

    // Other spellings of the same host: a port, upper case, one trailing dot (not two).
    let with_port = format!("{host}:8080");
    assert_eq!(canonical(with_port.as_bytes()).as_deref(), Ok(host));
    let upper = host.to_ascii_uppercase();
    assert_eq!(canonical(upper.as_bytes()).as_deref(), Ok(host));
    if !host.starts_with('[') {
        let dotted = format!("{host}.");
        assert_eq!(canonical(dotted.as_bytes()).as_deref(), Ok(host));
        let two = format!("{host}..");
        assert!(canonical(two.as_bytes()).is_err(), "{two:?} accepted");
    }

    // An origin on this host has this host.
    let origin = format!("https://{}", String::from_utf8_lossy(input));
    if let Some(o) = Origin::parse(&origin) {
        assert_eq!(o.host, host, "{origin:?}");
    }

    // A browser reads it as the same host. Punycode labels are left out: the WHATWG parser
    // also decodes them, and refuses those that are not valid punycode, which here are simply
    // names.
    let punycode = host
        .split('.')
        .any(|label| label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--"));
    if !punycode {
        match url::Host::parse(host) {
            // The same address: WHATWG writes an IPv4-mapped address in hex, RFC 5952 (and
            // the canonical form) as a dotted quad.
            Ok(url::Host::Ipv6(address)) => {
                let ours: std::net::Ipv6Addr = host[1..host.len() - 1].parse().unwrap();
                assert_eq!(address, ours, "{input:?}");
            }
            Ok(parsed) => assert_eq!(parsed.to_string(), host, "{input:?}"),
            Err(e) => panic!("{input:?} -> {host:?}: not a host to a browser: {e}"),
        }
    }
});
