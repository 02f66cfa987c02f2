//! `[upstream]`: where requests go and how (TLS, deadlines), the headers that carry the
//! identity, the upgrades that may be relayed, and the cache policy for signed-in answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::value::duration;
use crate::http::headers;
use crate::http::tls::client_config;
use crate::proxy::target::{UpstreamTarget, UpstreamTls};

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Where requests are forwarded; `None` without `upstream.url`, when sessiongate only
    /// serves its login and forward-auth endpoints.
    pub target: Option<UpstreamTarget>,
    pub identity_header: HeaderName,
    /// Carries the user's groups, comma-separated.
    pub groups_header: HeaderName,
    /// `upstream.upgrades`: the protocols an HTTP/1.1 upgrade may switch to, lower case
    /// (never `h2c`; see `upgrade::decide`).
    pub upgrades: Vec<http::HeaderValue>,
    /// `Cache-Control` given to a signed-in answer the app sent without one, so a shared cache
    /// in front cannot keep it for others; `None` when set to `""`.
    pub default_cache_control: Option<http::HeaderValue>,
}

pub(super) fn validate_upstream(u: &file::Upstream) -> Result<UpstreamConfig, ConfigError> {
    let identity_header = managed_header(
        "upstream.identity_header",
        u.identity_header.as_deref(),
        "x-forwarded-user",
    )?;
    let groups_header = managed_header(
        "upstream.groups_header",
        u.groups_header.as_deref(),
        "x-forwarded-groups",
    )?;
    if headers::same_name(&identity_header, &groups_header) {
        return Err(invalid(
            "upstream.groups_header",
            "must differ from upstream.identity_header",
        ));
    }
    let target = match &u.url {
        Some(url) => Some(validate_target(url, u)?),
        None => {
            for (key, set) in [
                ("upstream.timeout", u.timeout.is_some()),
                (
                    "upstream.tunnel_idle_timeout",
                    u.tunnel_idle_timeout.is_some(),
                ),
                ("upstream.ca", u.ca.is_some()),
                ("upstream.tls_server_name", u.tls_server_name.is_some()),
                (
                    "upstream.default_cache_control",
                    u.default_cache_control.is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(key, "needs upstream.url"));
                }
            }
            None
        }
    };
    Ok(UpstreamConfig {
        target,
        identity_header,
        groups_header,
        upgrades: upgrades(u.upgrades.as_deref())?,
        default_cache_control: default_cache_control(u.default_cache_control.as_deref())?,
    })
}

/// `upstream.upgrades` (default `["websocket"]`), lower case. Each entry is a protocol name
/// (an HTTP token); `h2c` is refused here as it is on every request, so a config that lists
/// it fails at start rather than seeming to allow it.
fn upgrades(listed: Option<&[String]>) -> Result<Vec<http::HeaderValue>, ConfigError> {
    let Some(listed) = listed else {
        return Ok(vec![http::HeaderValue::from_static("websocket")]);
    };
    let mut out: Vec<http::HeaderValue> = Vec::with_capacity(listed.len());
    for (i, name) in listed.iter().enumerate() {
        let key = || format!("upstream.upgrades[{i}]");
        if name.eq_ignore_ascii_case("h2c") {
            return Err(invalid(
                key(),
                "h2c can never be relayed: after it the client sends HTTP/2 requests straight to the app, past sessiongate; remove it",
            ));
        }
        if !crate::http::upgrade::is_token(name.as_bytes()) {
            return Err(invalid(
                key(),
                format!(
                    "{name:?} is not a protocol name (letters, digits and !#$%&'*+-.^_`|~, no spaces, no version)"
                ),
            ));
        }
        let lower = http::HeaderValue::from_str(&name.to_ascii_lowercase())
            .map_err(|_| invalid(key(), "is not a valid header value"))?;
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// `upstream.default_cache_control`: any value a `Cache-Control` header can carry (sent as
/// written), `""` for none.
fn default_cache_control(text: Option<&str>) -> Result<Option<http::HeaderValue>, ConfigError> {
    const KEY: &str = "upstream.default_cache_control";
    match text.map(str::trim) {
        // Static, so the copy put on each answer is a pointer, not a reference count shared by
        // every worker thread.
        None | Some("private") => Ok(Some(http::HeaderValue::from_static("private"))),
        Some("") => Ok(None),
        Some(text) => http::HeaderValue::from_str(text).map(Some).map_err(|_| {
            invalid(
                KEY,
                format!(
                    "{text:?} cannot be a header value (no line breaks or control characters); write e.g. \"private\", or \"\" to leave answers as the app sent them"
                ),
            )
        }),
    }
}

fn validate_target(url: &str, u: &file::Upstream) -> Result<UpstreamTarget, ConfigError> {
    let uri: http::Uri = url.parse().map_err(|_| {
        invalid(
            "upstream.url",
            format!("{url:?} is not a URL; write e.g. \"http://127.0.0.1:3000\""),
        )
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(invalid(
                "upstream.url",
                "must start with http:// or https://",
            ));
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| invalid("upstream.url", "has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("upstream.url", "must not contain user information"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            "upstream.url",
            "must not have a path or query: requests keep their own path",
        ));
    }
    // Normalise to host:port so the connector always has a port.
    let authority = if authority.port_u16().is_some() {
        authority
    } else {
        format!("{}:{}", authority.host(), if https { 443 } else { 80 })
            .parse()
            .map_err(|_| invalid("upstream.url", "has an invalid host"))?
    };
    Ok(UpstreamTarget {
        authority,
        tls: upstream_tls(https, u)?,
        timeout: duration("upstream.timeout", u.timeout, Duration::from_secs(30))?,
        tunnel_idle_timeout: duration(
            "upstream.tunnel_idle_timeout",
            u.tunnel_idle_timeout,
            Duration::from_secs(3600),
        )?,
    })
}

/// The client TLS for an `https://` upstream (`upstream.ca`, `upstream.tls_server_name`);
/// those keys are refused for a plain one.
fn upstream_tls(https: bool, u: &file::Upstream) -> Result<Option<UpstreamTls>, ConfigError> {
    if !https {
        for (key, set) in [
            ("upstream.ca", u.ca.is_some()),
            ("upstream.tls_server_name", u.tls_server_name.is_some()),
        ] {
            if set {
                return Err(invalid(key, "only applies to https:// upstreams"));
            }
        }
        return Ok(None);
    }
    let client = client_config(u.ca.as_deref().map(Path::new))
        .map_err(|reason| invalid("upstream.ca", reason))?;
    let server_name = match &u.tls_server_name {
        None => None,
        Some(name) => Some(
            rustls_pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                invalid(
                    "upstream.tls_server_name",
                    format!("{name:?} is not a DNS name or IP address"),
                )
            })?,
        ),
    };
    Ok(Some(UpstreamTls {
        client: Arc::new(client),
        ca: u.ca.as_ref().map(PathBuf::from),
        server_name,
    }))
}

/// A header sessiongate sets for the upstream (`key`, or `default` when absent): a valid name
/// that HTTP or sessiongate does not already manage.
fn managed_header(
    key: &str,
    name: Option<&str>,
    default: &'static str,
) -> Result<HeaderName, ConfigError> {
    let Some(name) = name else {
        return Ok(HeaderName::from_static(default));
    };
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(key, format!("{name:?} is not a valid header name")))?;
    if headers::is_reserved(&header) {
        return Err(invalid(
            key,
            format!("{name:?} is a header sessiongate or HTTP itself manages"),
        ));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::error::ConfigError;
    use crate::config::tests::MINIMAL;

    fn with_upstream_line(line: &str) -> Result<Config, ConfigError> {
        let toml = MINIMAL.replace(
            "url = \"http://127.0.0.1:3000\"",
            &format!("url = \"http://127.0.0.1:3000\"\n{line}"),
        );
        Config::from_toml(&toml)
    }

    #[test]
    fn upstream_upgrades_default_to_websocket_and_are_lower_cased() {
        let names = |c: Config| -> Vec<String> {
            c.upstream
                .upgrades
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(with_upstream_line("").unwrap()), ["websocket"]);
        assert_eq!(
            names(
                with_upstream_line("upgrades = [\"WebSocket\", \"My-Proto\", \"websocket\"]")
                    .unwrap()
            ),
            ["websocket", "my-proto"]
        );
        assert!(names(with_upstream_line("upgrades = []").unwrap()).is_empty());
    }

    #[test]
    fn upstream_upgrades_never_list_h2c_and_hold_only_tokens() {
        for (line, key, says) in [
            (
                "upgrades = [\"websocket\", \"h2c\"]",
                "upstream.upgrades[1]",
                "h2c can never be relayed",
            ),
            (
                "upgrades = [\"H2C\"]",
                "upstream.upgrades[0]",
                "h2c can never be relayed",
            ),
            (
                "upgrades = [\"web socket\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
            (
                "upgrades = [\"websocket/13\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
            (
                "upgrades = [\"\"]",
                "upstream.upgrades[0]",
                "is not a protocol name",
            ),
        ] {
            let e = with_upstream_line(line).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn default_cache_control_is_private_off_when_empty_and_any_header_value() {
        let value = |line: &str| {
            with_upstream_line(line)
                .unwrap()
                .upstream
                .default_cache_control
        };
        assert_eq!(value("").unwrap(), "private");
        assert_eq!(value("default_cache_control = \"\"").as_ref(), None);
        assert_eq!(
            value("default_cache_control = \"private, no-store, max-age=0\"").unwrap(),
            "private, no-store, max-age=0"
        );
        let e = with_upstream_line("default_cache_control = \"private\\nx-evil: 1\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream.default_cache_control") && e.contains("header value"),
            "{e}"
        );
    }
}
