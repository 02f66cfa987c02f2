//! Fuzzes `auth::redirect::safe_return_path` and `safe_return`, the filters on the post-login
//! return address (`rd`) that ends up in a `Location` header, without and with
//! `auth.redirect_hosts`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate::http::redirect::{HostPattern, safe_return, safe_return_path};

/// What a browser does to a Location value before resolving it: drops tabs and newlines
/// anywhere and reads `\` as `/` (WHATWG URL parsing for http(s) URLs).
fn as_browser_reads_it(loc: &str) -> String {
    loc.chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect()
}

fuzz_target!(|rd: &str| {
    let kept = safe_return_path(rd);

    // Either the fallback or the input itself, never a rewritten value.
    assert!(kept == "/" || kept == rd, "{rd:?} -> {kept:?}");

    // Stays on the site in the browser model of the unit tests.
    let cleaned = as_browser_reads_it(kept);
    assert!(
        cleaned.starts_with('/') && !cleaned.starts_with("//"),
        "{rd:?} -> {kept:?} reads as {cleaned:?}"
    );
    // Visible ASCII only: no control characters to drop, no CR/LF to split the header.
    assert!(kept.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{kept:?}");
    assert!(kept.len() <= 2048);
    assert!(http::HeaderValue::from_str(kept).is_ok());

    // Stays on the site for a real WHATWG URL parser too: resolved against a page of the site,
    // the origin does not change.
    let base = url::Url::parse("https://site.example/.sessiongate/login").unwrap();
    if let Ok(target) = base.join(kept) {
        assert_eq!(
            target.origin(),
            base.origin(),
            "{kept:?} resolves to {target}"
        );
    }

    // With redirect hosts: a kept absolute URL lands, for the WHATWG parser, on a listed host
    // over https; anything else kept is a path on the site, as above.
    let hosts = [
        HostPattern::parse("app.example.com").unwrap(),
        HostPattern::parse(".example.org").unwrap(),
    ];
    let kept = safe_return(rd, &hosts);
    assert!(kept == "/" || kept == rd, "{rd:?} -> {kept:?}");
    assert!(http::HeaderValue::from_str(kept).is_ok());
    if let Ok(target) = base.join(kept) {
        if target.origin() != base.origin() {
            let host = target.host_str().unwrap_or_default();
            assert!(
                target.scheme() == "https" && hosts.iter().any(|h| h.matches(host)),
                "{kept:?} resolves to {target}"
            );
        }
    }
});
