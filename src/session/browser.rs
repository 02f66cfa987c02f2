//! A browser as the sessions page names it ("Firefox on Linux"), read from the User-Agent at
//! login. Two small numbers, so a session stays small; never the header itself, which can be
//! long and is the client's to write.

use std::fmt;

/// The browser and operating system a session was started from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Browser {
    family: Family,
    os: Os,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum Family {
    #[default]
    Unknown,
    Firefox,
    Chrome,
    Chromium,
    Edge,
    Opera,
    Safari,
    Curl,
    Wget,
    Python,
    Go,
    Node,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum Os {
    #[default]
    Unknown,
    Windows,
    Mac,
    Linux,
    Android,
    Ios,
    Chrome,
}

/// Every family in the order of its number.
const FAMILY_BY_NUMBER: [Family; 12] = [
    Family::Unknown,
    Family::Firefox,
    Family::Chrome,
    Family::Chromium,
    Family::Edge,
    Family::Opera,
    Family::Safari,
    Family::Curl,
    Family::Wget,
    Family::Python,
    Family::Go,
    Family::Node,
];

/// Every operating system in the order of its number.
const OS_BY_NUMBER: [Os; 7] = [
    Os::Unknown,
    Os::Windows,
    Os::Mac,
    Os::Linux,
    Os::Android,
    Os::Ios,
    Os::Chrome,
];

/// Tokens looked for in order: the first match names the family. Edge, Opera and Chromium
/// also say "Chrome" and "Safari", and Chrome also says "Safari", so they come first.
const FAMILIES: &[(&str, Family)] = &[
    ("Edg/", Family::Edge),
    ("OPR/", Family::Opera),
    ("Firefox/", Family::Firefox),
    ("FxiOS/", Family::Firefox),
    ("Chromium/", Family::Chromium),
    ("Chrome/", Family::Chrome),
    ("CriOS/", Family::Chrome),
    ("Safari/", Family::Safari),
    ("curl/", Family::Curl),
    ("Wget/", Family::Wget),
    ("python-requests/", Family::Python),
    ("Python-urllib/", Family::Python),
    ("aiohttp/", Family::Python),
    ("Go-http-client/", Family::Go),
    ("node-fetch", Family::Node),
    ("undici", Family::Node),
];

/// Same idea for the system: iPhone and Android user agents also say "Mac OS X" and "Linux".
const SYSTEMS: &[(&str, Os)] = &[
    ("iPhone", Os::Ios),
    ("iPad", Os::Ios),
    ("Android", Os::Android),
    ("CrOS", Os::Chrome),
    ("Windows", Os::Windows),
    ("Macintosh", Os::Mac),
    ("Mac OS X", Os::Mac),
    ("Linux", Os::Linux),
];

impl Browser {
    pub const UNKNOWN: Browser = Browser {
        family: Family::Unknown,
        os: Os::Unknown,
    };

    pub fn from_user_agent(ua: &str) -> Browser {
        // Real user agents are a few hundred bytes; a longer one is not read past that.
        let ua = ua.get(..ua.len().min(512)).unwrap_or("");
        let family = FAMILIES
            .iter()
            .find(|(token, _)| ua.contains(token))
            .map_or(Family::Unknown, |(_, f)| *f);
        let os = SYSTEMS
            .iter()
            .find(|(token, _)| ua.contains(token))
            .map_or(Os::Unknown, |(_, o)| *o);
        Browser { family, os }
    }

    /// The browser from a request's `User-Agent`, if it has a readable one.
    pub fn of(headers: &http::HeaderMap) -> Browser {
        headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map_or_else(Browser::default, Browser::from_user_agent)
    }

    /// Two bytes for the state file (see `session::state`).
    pub fn to_bytes(self) -> [u8; 2] {
        [self.family as u8, self.os as u8]
    }

    /// The browser [`to_bytes`](Self::to_bytes) wrote; unknown numbers read as unknown.
    pub fn from_bytes([family, os]: [u8; 2]) -> Browser {
        Browser {
            family: FAMILY_BY_NUMBER
                .get(usize::from(family))
                .copied()
                .unwrap_or_default(),
            os: OS_BY_NUMBER
                .get(usize::from(os))
                .copied()
                .unwrap_or_default(),
        }
    }

    fn family_name(self) -> &'static str {
        match self.family {
            Family::Unknown => "Unknown browser",
            Family::Firefox => "Firefox",
            Family::Chrome => "Chrome",
            Family::Chromium => "Chromium",
            Family::Edge => "Edge",
            Family::Opera => "Opera",
            Family::Safari => "Safari",
            Family::Curl => "curl",
            Family::Wget => "Wget",
            Family::Python => "Python script",
            Family::Go => "Go program",
            Family::Node => "Node.js program",
        }
    }

    fn os_name(self) -> Option<&'static str> {
        match self.os {
            Os::Unknown => None,
            Os::Windows => Some("Windows"),
            Os::Mac => Some("macOS"),
            Os::Linux => Some("Linux"),
            Os::Android => Some("Android"),
            Os::Ios => Some("iOS"),
            Os::Chrome => Some("ChromeOS"),
        }
    }
}

impl fmt::Display for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.os_name() {
            Some(os) => write!(f, "{} on {os}", self.family_name()),
            None => f.write_str(self.family_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers_are_named_with_their_system() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Windows",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            ("curl/8.5.0", "curl"),
            ("", "Unknown browser"),
            ("<script>", "Unknown browser"),
        ];
        for (ua, want) in cases {
            assert_eq!(Browser::from_user_agent(ua).to_string(), want, "{ua}");
        }
    }

    #[test]
    fn a_huge_user_agent_is_read_only_so_far() {
        let ua = format!("{}Firefox/1.0", "x".repeat(100_000));
        assert_eq!(Browser::from_user_agent(&ua).to_string(), "Unknown browser");
    }

    #[test]
    fn a_browser_reads_back_from_its_two_bytes() {
        for (i, family) in FAMILY_BY_NUMBER.iter().enumerate() {
            assert_eq!(*family as usize, i);
        }
        for (i, os) in OS_BY_NUMBER.iter().enumerate() {
            assert_eq!(*os as usize, i);
        }
        let b = Browser::from_user_agent(
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        );
        assert_eq!(Browser::from_bytes(b.to_bytes()), b);
        assert_eq!(Browser::from_bytes([200, 200]), Browser::UNKNOWN);
        // A multi-byte character at the cut is not a panic.
        let ua = format!("{}é Firefox/1.0", "x".repeat(511));
        assert_eq!(Browser::from_user_agent(&ua).to_string(), "Unknown browser");
    }
}
