//! Request paths: which targets are acceptable at all, and which fall under a public prefix.

/// Refuses targets a backend could read differently from us: bad percent-escapes, and
/// escaped NUL or control characters (raw ones never get past hyper's parser).
pub fn check_target(uri: &http::Uri) -> Result<(), &'static str> {
    let target = uri.path_and_query().map_or("", |pq| pq.as_str()).as_bytes();
    let mut i = 0;
    while i < target.len() {
        match target[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(target.get(i + 1)), hex(target.get(i + 2))) else {
                    return Err("bad percent-encoding");
                };
                let byte = hi * 16 + lo;
                if byte < 0x20 || byte == 0x7f {
                    return Err("encoded NUL or control character");
                }
                i += 3;
            }
            b if b < 0x20 || b == 0x7f => return Err("control character"),
            _ => i += 1,
        }
    }
    Ok(())
}

/// True when `path` lies under one of the public prefixes. Only plain paths qualify: anything a
/// backend might normalise into another path (dot segments, encoded dots or slashes,
/// backslashes, `;` parameters) needs a login, so a public prefix can't be walked out of.
pub fn is_public(path: &str, public: &[String]) -> bool {
    if public.is_empty() || !is_plain_path(path) {
        return false;
    }
    public.iter().any(|p| {
        path.strip_prefix(p.as_str())
            .is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    })
}

fn is_plain_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !path.contains(['\\', ';'])
        && !lower.contains("%2e")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    use super::{check_target, is_public};

    #[test]
    fn targets_with_bad_escapes_or_control_characters_are_refused() {
        for ok in ["/", "/a%20b?q=%2F&x=%7e", "/%41", "/caf%C3%A9"] {
            assert_eq!(check_target(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "/%zz",
            "/a%2",
            "/a%",
            "/x?y=%G0",
            "/a%00b",
            "/a%0d%0aX:1",
            "/%7F",
            "/?a=%1b",
        ] {
            assert!(check_target(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_prefixes_match_whole_segments_of_plain_paths_only() {
        let public = vec!["/public".to_string(), "/static/".to_string()];
        for yes in ["/public", "/public/", "/public/a.css", "/static/x.js"] {
            assert!(is_public(yes, &public), "{yes}");
        }
        for no in [
            "/publicity",
            "/",
            "/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/..%2fadmin",
            "/public/.%2e/admin",
            "/public\\..\\admin",
            "/public;x/../admin",
            "/PUBLIC/a",
            "/static",
        ] {
            assert!(!is_public(no, &public), "{no}");
        }
    }
}
