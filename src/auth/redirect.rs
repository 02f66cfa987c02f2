//! The return address (`rd`) after login: only a path on this site is ever followed.

/// Longest return address kept; longer ones fall back to `/`.
const MAX_LEN: usize = 2048;

/// `rd` if it is a same-site relative path, else `/`.
///
/// Accepted: starts with a single `/` followed by anything but `/` or `\`, and contains only
/// visible ASCII other than `\`. That rules out `//host` and `/\host` (browsers read both as
/// another host), schemes (`https:`, `javascript:` cannot start with `/`), control characters
/// (browsers drop tabs and newlines, turning `/\t/host` into `//host`; CR/LF would also split
/// the Location header), spaces and non-ASCII. Percent-escapes stay as they are: a browser
/// does not decode `%2F` in a Location path, so `/%2F%2Fhost` stays on this site.
pub fn safe_return_path(rd: &str) -> &str {
    let b = rd.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_LEN
        && b[0] == b'/'
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && b.iter().all(|&c| (0x21..=0x7e).contains(&c) && c != b'\\');
    if ok { rd } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

    #[test]
    fn same_site_paths_are_kept() {
        for ok in [
            "/",
            "/app",
            "/app/x?y=1&z=%2F",
            "/a//b",
            "/%2F%2Fevil.com",
            "/x#frag",
        ] {
            assert_eq!(safe_return_path(ok), ok);
        }
    }

    #[test]
    fn anything_that_could_leave_the_site_falls_back_to_root() {
        for bad in [
            "",
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "https:evil.com",
            "javascript:alert(1)",
            "/\t/evil.com",
            "/\n/evil.com",
            "/x\r\nSet-Cookie: a=b",
            "/ /evil.com",
            "/é",
            "evil.com",
            "/a\\b",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?} was kept");
        }
        assert_eq!(safe_return_path(&format!("/{}", "a".repeat(5000))), "/");
    }

    /// oauth2-proxy's open-redirect payloads, decoded the way a form value is: none survives
    /// unless it is a plain path.
    #[test]
    fn oauth2_proxy_open_redirect_payloads_never_leave_the_site() {
        let list = include_str!("../../tests/data/oauth2-proxy-openredirects.txt");
        let mut checked = 0;
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            for candidate in [line.to_string(), percent_decode(line)] {
                let kept = safe_return_path(&candidate);
                assert!(
                    kept == "/" || stays_on_site(kept),
                    "{line:?} -> {kept:?} could leave the site"
                );
            }
            checked += 1;
        }
        assert!(checked > 500, "only {checked} payloads read");
    }

    fn percent_decode(s: &str) -> String {
        form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    /// What a browser does with a Location value: drop tabs/newlines, treat `\` as `/`;
    /// the result must not start with `//` (network-path reference) or a scheme.
    fn stays_on_site(loc: &str) -> bool {
        let cleaned: String = loc
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| if c == '\\' { '/' } else { c })
            .collect();
        cleaned.starts_with('/') && !cleaned.starts_with("//")
    }
}
