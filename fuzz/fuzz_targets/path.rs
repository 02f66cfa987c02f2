//! Fuzzes `paths::normalize`, `paths::is_unambiguous` and `paths::backend_reading`: the
//! request-target normalization that every routing and authorisation decision (and the
//! forwarded path) is based on, and the second reading access rules judge ambiguous paths by.
//!
//! The input is a request target; it is split at the first `?` into path and query. Besides
//! structural properties, the result is compared with reference implementations written here
//! from the RFC 3986 text (§5.2.4 remove_dot_segments, §6.2.2.2 percent-encoding
//! normalization, §6.2.2.1 case normalization of escapes).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use sessiongate::http::paths::{backend_reading, is_unambiguous, normalize};

/// RFC 3986 §5.2.4, step by step as the RFC writes it (input buffer, output buffer).
fn rfc_remove_dot_segments(path: &str) -> String {
    let mut input = path.to_string();
    let mut output = String::new();
    // "remove the last segment and its preceding "/" (if any) from the output buffer"
    fn pop_last_segment(output: &mut String) {
        match output.rfind('/') {
            Some(i) => output.truncate(i),
            None => output.clear(),
        }
    }
    while !input.is_empty() {
        if input.starts_with("../") {
            // A.
            input.drain(..3);
        } else if input.starts_with("./") {
            // A.
            input.drain(..2);
        } else if input.starts_with("/./") {
            // B.
            input.replace_range(..3, "/");
        } else if input == "/." {
            // B.
            input = "/".to_string();
        } else if input.starts_with("/../") {
            // C.
            input.replace_range(..4, "/");
            pop_last_segment(&mut output);
        } else if input == "/.." {
            // C.
            input = "/".to_string();
            pop_last_segment(&mut output);
        } else if input == "." || input == ".." {
            // D.
            input.clear();
        } else {
            // E. The first path segment, with its initial "/" if any, up to the next "/".
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// What the target checks must accept: every `%` starts a valid escape, and there is no raw
/// control character (C0 or DEL) and no escaped NUL. `escaped_controls`: whether escaped
/// control characters other than NUL are allowed too (in the query: a GET form's text area
/// sends `%0D%0A`; never in the path).
fn reference_valid(text: &str, escaped_controls: bool) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            ) else {
                return false;
            };
            let byte = hi * 16 + lo;
            if byte == 0 || (!escaped_controls && (byte < 0x20 || byte == 0x7f)) {
                return false;
            }
            i += 3;
        } else {
            if b[i] < 0x20 || b[i] == 0x7f {
                return false;
            }
            i += 1;
        }
    }
    true
}

/// RFC 3986 §6.2.2.2 and §6.2.2.1: decode escapes of unreserved characters, upper-case the
/// hex digits of all others; every other byte stays as it is. Only called on valid text, where
/// every `%` is followed by two hex digits. Written escape by escape (split at `%`, parse with
/// the standard library) rather than byte by byte as `paths.rs` does, so that the two share
/// the RFC and not the code.
fn reference_decode(text: &str) -> String {
    let mut pieces = text.split('%');
    let mut out = pieces.next().unwrap_or_default().to_string();
    for piece in pieces {
        let (hex, rest) = piece.split_at(2);
        let byte = u8::from_str_radix(hex, 16).expect("valid text: two hex digits after %");
        if unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
        }
        out.push_str(rest);
    }
    out
}

fuzz_target!(|target: &str| {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let result = normalize(path, query);

    // Accepts what the reference accepts, refuses what it refuses. Escaped control characters
    // other than NUL in the query may go either way.
    let path_ok = path.starts_with('/') && reference_valid(path, false);
    let query_strict = query.is_none_or(|q| reference_valid(q, false));
    let query_lenient = query.is_none_or(|q| reference_valid(q, true));
    if path_ok && query_strict {
        assert!(result.is_ok(), "{target:?} -> {result:?}");
    }
    if !path_ok || !query_lenient {
        assert!(result.is_err(), "{target:?} -> {result:?}");
    }

    let Ok(n) = result else { return };

    if !path.contains('%') {
        // Differential: without escapes, plain remove_dot_segments of the input.
        assert_eq!(
            n,
            rfc_remove_dot_segments(path),
            "{path:?}: normalize differs from RFC 3986 remove_dot_segments"
        );
    } else {
        // With escapes: decode unreserved / upper-case the rest, then remove_dot_segments.
        assert_eq!(
            n,
            rfc_remove_dot_segments(&reference_decode(path)),
            "{path:?}: normalize differs from RFC 3986 decode + remove_dot_segments"
        );
    }

    assert!(n.starts_with('/'), "{path:?} -> {n:?}");

    // Idempotent, and a normal path is returned borrowed (no allocation).
    match normalize(&n, None) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, &*n, "{path:?} -> {n:?} not idempotent"),
        other => panic!("{path:?} -> {n:?}, normalized again: {other:?}"),
    }

    // No dot segments left.
    assert!(
        n.split('/').all(|seg| seg != "." && seg != ".."),
        "{path:?} -> {n:?} keeps a dot segment"
    );

    // Every % starts an escape with two upper-case hex digits of a character that is not
    // unreserved.
    let b = n.as_bytes();
    for (i, _) in b.iter().enumerate().filter(|(_, c)| **c == b'%') {
        let (Some(&hi), Some(&lo)) = (b.get(i + 1), b.get(i + 2)) else {
            panic!("{path:?} -> {n:?}: truncated escape");
        };
        let upper_hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
        assert!(upper_hex(hi) && upper_hex(lo), "{path:?} -> {n:?}");
        let byte = hex_value(hi).unwrap() * 16 + hex_value(lo).unwrap();
        assert!(
            !unreserved(byte),
            "{path:?} -> {n:?} keeps an escaped unreserved character"
        );
    }

    // Public rules only apply to unambiguous paths: none may hold what a backend could read
    // as another path.
    if is_unambiguous(&n) {
        for bad in ["\\", ";", "%2F", "%5C"] {
            assert!(
                !n.contains(bad),
                "{path:?} -> {n:?} is unambiguous but holds {bad:?}"
            );
        }
        assert!(
            !n.split('/').any(|seg| seg == "." || seg == ".."),
            "{path:?} -> {n:?} is unambiguous but has a dot segment"
        );
    }
    // The backend reading is a clean path: unambiguous, no repeated slash, and normal.
    match backend_reading(&n) {
        None => assert!(
            is_unambiguous(&n) && !n.contains("//"),
            "{path:?} -> {n:?} is ambiguous but has no other reading"
        ),
        Some(r) => {
            assert!(r.starts_with('/'), "{n:?} -> {r:?}");
            assert!(is_unambiguous(&r), "{n:?} reads as ambiguous {r:?}");
            assert!(!r.contains("//"), "{n:?} reads as {r:?}");
            assert_eq!(normalize(&r, None).unwrap(), r, "{n:?} reads as {r:?}");
            assert_eq!(backend_reading(&r), None, "{n:?} reads as {r:?}");
        }
    }
});
