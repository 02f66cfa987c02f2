//! Fuzzes `auth::redirect::safe_return_path`, the filter on the post-login return address
//! (`rd`) that ends up in a `Location` header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate::auth::redirect::safe_return_path;

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
});
