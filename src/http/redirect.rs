//! The return address (`rd`) after login: a path on this site, or an `https://` URL on a host
//! listed in `auth.redirect_hosts`; anything else falls back to `/`.

use crate::http::host;

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

/// An entry of `auth.redirect_hosts`: one host, or (written with a leading dot) a domain and
/// all its subdomains. Canonical (`host::canonical`), like every host it is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Domain(String),
}

impl HostPattern {
    /// Parses a config entry; the error says what is wrong.
    pub fn parse(text: &str) -> Result<HostPattern, &'static str> {
        let (domain, name) = match text.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = match host::parse(name.as_bytes()) {
            // A domain's subdomains are names: an IP address has none.
            Ok(a) if a.port.is_none() && !(domain && host::is_ip(&a.host)) => a.host.into_owned(),
            _ => {
                return Err(
                    "must be a host name (\"app.example.com\") or a domain with a leading dot (\".example.com\"), without scheme, port or path",
                );
            }
        };
        Ok(if domain {
            HostPattern::Domain(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether the canonical `host` is this host, or in this domain.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Domain(d) => {
                host == d
                    || host.len() > d.len() + 1
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.'
                        && host.ends_with(d.as_str())
            }
        }
    }
}

/// `rd` if it is a same-site path ([`safe_return_path`]) or an `https://` URL on one of
/// `hosts`, else `/`. The URL must be visible ASCII without `\` or `@` (no userinfo, which
/// browsers would read as the host boundary), with a host (`host::parse`; its canonical form
/// is what is matched) and an optional numeric port, followed by nothing or a path, query or
/// fragment.
pub fn safe_return<'a>(rd: &'a str, hosts: &[HostPattern]) -> &'a str {
    if rd.starts_with('/') || hosts.is_empty() {
        return safe_return_path(rd);
    }
    let Some(rest) = rd.strip_prefix("https://") else {
        return "/";
    };
    let visible = rd.len() <= MAX_LEN
        && rd
            .bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b'\\' && c != b'@');
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let listed = host::parse(&rest.as_bytes()[..end])
        .is_ok_and(|a| hosts.iter().any(|h| h.matches(&a.host)));
    if visible && listed { rd } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::{HostPattern, safe_return, safe_return_path};

    fn hosts() -> Vec<HostPattern> {
        ["app.example.com", ".example.org"]
            .iter()
            .map(|h| HostPattern::parse(h).unwrap())
            .collect()
    }

    #[test]
    fn absolute_return_urls_are_kept_only_for_listed_https_hosts() {
        let hosts = hosts();
        for ok in [
            "https://app.example.com",
            "https://app.example.com/",
            "https://APP.example.com/x?y=1#z",
            "https://app.example.com:8443/x",
            "https://example.org/",
            "https://a.b.example.org/path//x",
            // DNS reads a trailing dot as the same name; so does the match.
            "https://app.example.com./x",
            "https://A.B.Example.ORG.:8443/",
        ] {
            assert_eq!(safe_return(ok, &hosts), ok, "{ok}");
        }
        for bad in [
            "http://app.example.com/",
            "https://evil.com/",
            "https://evil-example.com/",
            "https://app.example.com.evil/",
            "https://example.org.evil/",
            "https://evilexample.org/",
            "https://app.example.com@evil.com/",
            "https://evil.com@app.example.com/",
            "https://evil.com\\@app.example.com/",
            "https://app.example.com\\evil.com",
            "https://evil.com\\app.example.com",
            "https:///app.example.com/",
            "https:////evil.com",
            "https://app.example.com:x/",
            "https://app.example.com:/",
            "https://app..example.com/",
            "https://.example.org/",
            "https://app.example.com../",
            "https://app.example.com:65536/",
            "https://app%2eexample.com/",
            "https://[::1]/",
            "https://example.org.evil./",
            "https://app.example.com/\tx",
            "https://app.example.com/ x",
            "//app.example.com/",
            "HTTPS://app.example.com/",
            "https:app.example.com",
        ] {
            assert_eq!(safe_return(bad, &hosts), "/", "{bad:?} was kept");
        }
        assert_eq!(safe_return("/local?x", &hosts), "/local?x");
        assert_eq!(safe_return("https://app.example.com/", &[]), "/");
    }

    #[test]
    fn host_patterns_are_host_names_or_dotted_domains() {
        assert_eq!(
            HostPattern::parse("App.Example.com"),
            Ok(HostPattern::Exact("app.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse(".example.com"),
            Ok(HostPattern::Domain("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("App.Example.com."),
            Ok(HostPattern::Exact("app.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("10.0.0.5"),
            Ok(HostPattern::Exact("10.0.0.5".into()))
        );
        for bad in [
            "",
            ".",
            "..example.com",
            "https://a.example",
            "a.example:443",
            "a.example/x",
            "*.example.com",
            "a b",
            ".10.0.0.5",
            ".[::1]",
            "a.example..",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

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

    /// The same payloads with redirect hosts configured, on the hosts the payloads aim at
    /// among others: whatever is kept stays on the site or, as a browser parses it (WHATWG
    /// URL), lands on a listed host.
    #[test]
    fn oauth2_proxy_payloads_never_reach_an_unlisted_host() {
        let list = include_str!("../../tests/data/oauth2-proxy-openredirects.txt");
        let hosts: Vec<HostPattern> = ["app.example.com", ".example.org"]
            .iter()
            .map(|h| HostPattern::parse(h).unwrap())
            .collect();
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            for candidate in [line.to_string(), percent_decode(line)] {
                let kept = safe_return(&candidate, &hosts);
                if kept == "/" || stays_on_site(kept) {
                    continue;
                }
                let url = url::Url::parse(kept).unwrap_or_else(|e| panic!("{kept:?}: {e}"));
                let host = url.host_str().unwrap_or_default();
                let listed = crate::http::host::canonical(host.as_bytes())
                    .is_ok_and(|c| hosts.iter().any(|h| h.matches(&c)));
                assert!(
                    url.scheme() == "https" && listed,
                    "{line:?} -> {kept:?} reaches {host:?}"
                );
            }
        }
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
