//! `[server]` and `[server.tls]`: the listeners, their deadlines, TLS and HSTS, and the proxies
//! whose forwarding headers are believed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::value::{duration, positive};
use crate::http::tls::{CertFiles, load_certified_key, load_ocsp};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Number of single-threaded runtimes serving connections (one per core by default).
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Slow-client and idle-connection deadline: a connection with no request being handled
    /// and nothing written for this long is closed (src/server/watchdog.rs).
    pub header_read_timeout: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTPS on the main listener when set.
    pub tls: Option<TlsFiles>,
    /// A plain-http listener that redirects everything to https.
    pub redirect_http: Option<SocketAddr>,
    /// `Strict-Transport-Security` value sent on responses over TLS: `server.hsts` with
    /// `[server.tls]`'s includeSubDomains and preload, made once here.
    pub hsts: Option<http::HeaderValue>,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Peers whose X-Forwarded-* headers are believed (a load balancer in front).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `server.tls.ocsp_file`: a DER OCSP response stapled with the certificate.
    pub ocsp: Option<PathBuf>,
    /// Loaded and checked at validation time, so `sessiongate check` catches bad files.
    pub loaded: Arc<rustls::sign::CertifiedKey>,
}

impl TlsFiles {
    /// The files to read again on SIGHUP.
    pub fn files(&self) -> CertFiles {
        CertFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ocsp: self.ocsp.clone(),
        }
    }
}

pub(super) fn validate_server(s: &file::Server, cores: usize) -> Result<ServerConfig, ConfigError> {
    let tls = s.tls.as_ref().map(validate_tls).transpose()?;
    let redirect_http = match &s.redirect_http {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(invalid(
                "server.redirect_http",
                "redirects to https need [server.tls] (cert and key)",
            ));
        }
        Some(addr) => Some(listen("server.redirect_http", addr)?),
    };
    let hsts = hsts(s.hsts, s.tls.as_ref())?;
    Ok(ServerConfig {
        listen: listen("server.listen", &s.listen)?,
        workers: positive("server.workers", s.workers, cores)?,
        shutdown_timeout: duration(
            "server.shutdown_timeout",
            s.shutdown_timeout,
            Duration::from_secs(10),
        )?,
        header_read_timeout: duration(
            "server.header_read_timeout",
            s.header_read_timeout,
            Duration::from_secs(30),
        )?,
        handshake_timeout: duration(
            "server.handshake_timeout",
            s.handshake_timeout,
            Duration::from_secs(10),
        )?,
        max_connections: positive("server.max_connections", s.max_connections, 8192)?,
        trusted_proxies: trusted_proxies(s.trusted_proxies.as_deref())?,
        tls,
        redirect_http,
        hsts,
    })
}

fn listen(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\""),
        )
    })
}

/// `server.trusted_proxies`: addresses and CIDR ranges.
fn trusted_proxies(listed: Option<&[String]>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    listed
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{text:?} is not an address or CIDR range like \"10.0.0.0/8\""),
                    )
                })
        })
        .collect()
}

/// `[server.tls]`: the certificate and key (which must belong together) and the OCSP response
/// to staple, all read now so a bad file stops the start and `check`, naming its key.
fn validate_tls(t: &file::ServerTls) -> Result<TlsFiles, ConfigError> {
    let (cert, key) = (PathBuf::from(&t.cert), PathBuf::from(&t.key));
    let mut loaded =
        load_certified_key(&cert, &key).map_err(|reason| invalid("server.tls", reason))?;
    let ocsp = match &t.ocsp_file {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            let der = load_ocsp(&path).map_err(|reason| invalid("server.tls.ocsp_file", reason))?;
            loaded.ocsp = Some(der);
            Some(path)
        }
    };
    Ok(TlsFiles {
        cert,
        key,
        ocsp,
        loaded: Arc::new(loaded),
    })
}

/// `server.hsts` with the directives `[server.tls]` asks for; it needs `[server.tls]`, and the
/// directives need it.
fn hsts(
    max_age: Option<Duration>,
    tls: Option<&file::ServerTls>,
) -> Result<Option<http::HeaderValue>, ConfigError> {
    match (max_age, tls) {
        (None, t) => {
            hsts_flags_without_max_age(t)?;
            Ok(None)
        }
        (Some(_), None) => Err(invalid(
            "server.hsts",
            "HSTS needs [server.tls] (cert and key)",
        )),
        (Some(max_age), Some(t)) => {
            let max_age = duration("server.hsts", Some(max_age), Duration::ZERO)?;
            Ok(Some(hsts_value(
                max_age,
                t.hsts_include_subdomains.unwrap_or(false),
                t.hsts_preload.unwrap_or(false),
            )?))
        }
    }
}

/// The browsers' HSTS preload list takes only hosts that send a max-age of a year or more with
/// includeSubDomains (its submission rules): anything less is refused here rather than sent as
/// a `preload` the list would reject.
const HSTS_PRELOAD_MIN: Duration = Duration::from_secs(31_536_000);

/// The `Strict-Transport-Security` value: `max-age` from `server.hsts`, then the directives
/// `[server.tls]` asks for.
fn hsts_value(
    max_age: Duration,
    include_subdomains: bool,
    preload: bool,
) -> Result<http::HeaderValue, ConfigError> {
    if preload && !include_subdomains {
        return Err(invalid(
            "server.tls.hsts_preload",
            "preload needs server.tls.hsts_include_subdomains = true (the preload list covers every subdomain)",
        ));
    }
    if preload && max_age < HSTS_PRELOAD_MIN {
        return Err(invalid(
            "server.tls.hsts_preload",
            format!(
                "preload needs server.hsts of at least 365d (31536000 seconds); it is {} seconds",
                max_age.as_secs()
            ),
        ));
    }
    let mut value = format!("max-age={}", max_age.as_secs());
    if include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    Ok(http::HeaderValue::from_str(&value).expect("digits and ASCII words are header-safe"))
}

/// `hsts_include_subdomains` or `hsts_preload` on, but no `server.hsts` to send them with:
/// refused, since no header would be sent and the setting would silently do nothing.
fn hsts_flags_without_max_age(tls: Option<&file::ServerTls>) -> Result<(), ConfigError> {
    let Some(t) = tls else { return Ok(()) };
    for (key, on) in [
        (
            "server.tls.hsts_include_subdomains",
            t.hsts_include_subdomains,
        ),
        ("server.tls.hsts_preload", t.hsts_preload),
    ] {
        if on == Some(true) {
            return Err(invalid(
                key,
                "needs server.hsts (the max-age) to be set: the directive is sent in that header",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_value_joins_max_age_and_the_directives_and_refuses_a_preload_the_list_would() {
        let year = Duration::from_secs(31_536_000);
        let value = |max_age, sub, preload| {
            hsts_value(max_age, sub, preload).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(value(year, false, false).unwrap(), "max-age=31536000");
        assert_eq!(
            value(Duration::from_secs(60), true, false).unwrap(),
            "max-age=60; includeSubDomains"
        );
        assert_eq!(
            value(year, true, true).unwrap(),
            "max-age=31536000; includeSubDomains; preload"
        );
        for (max_age, sub, says) in [
            (year, false, "hsts_include_subdomains = true"),
            (year - Duration::from_secs(1), true, "at least 365d"),
        ] {
            let err = value(max_age, sub, true).unwrap_err().to_string();
            assert!(
                err.contains("server.tls.hsts_preload") && err.contains(says),
                "{err}"
            );
        }
    }
}
