//! The deployment examples in deploy/ hold configs sessiongate accepts: the compose file's
//! sessiongate.toml and the one inside the Kubernetes ConfigMap, with their secret files
//! stood in for by files of the same shape.

use sessiongate::Config;
use sessiongate::config::StoreConfig;

const COMPOSE: &str = include_str!("../deploy/compose/sessiongate.toml");
const KUBERNETES: &str = include_str!("../deploy/kubernetes/sessiongate.yaml");

/// The TOML between the ConfigMap's markers, without the YAML block's indent.
fn configmap_toml() -> String {
    let start = KUBERNETES
        .find("# --- sessiongate.toml begins")
        .expect("begin marker");
    let end = KUBERNETES
        .find("# --- sessiongate.toml ends")
        .expect("end marker");
    KUBERNETES[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `toml` with its /run/secrets files replaced by temporary ones, validated.
fn validated(toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sessiongate-secret");
    std::fs::write(&secret, "x".repeat(48) + "\n").unwrap();
    let password = dir.path().join("redis-password");
    std::fs::write(&password, "redis-password\n").unwrap();
    let toml = toml
        .replace("/run/secrets/sessiongate-secret", secret.to_str().unwrap())
        .replace("/run/secrets/redis-password", password.to_str().unwrap());
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

#[test]
fn the_compose_config_is_valid_and_uses_redis() {
    let config = validated(COMPOSE);
    let StoreConfig::Redis(redis) = &config.session.store else {
        panic!("the compose example runs replicas on Redis");
    };
    assert_eq!(redis.display, "redis://redis:6379/0");
    assert!(config.session.secret.is_some());
    assert!(
        !config.server.trusted_proxies.is_empty(),
        "the load balancer is trusted"
    );
}

#[test]
fn the_kubernetes_configmap_config_is_valid_and_uses_redis() {
    let toml = configmap_toml();
    assert!(toml.contains("[session]"), "{toml}");
    let config = validated(&toml);
    assert!(matches!(config.session.store, StoreConfig::Redis(_)));
    assert!(config.session.secure, "behind an HTTPS ingress");
    // The probes point at endpoints sessiongate serves.
    assert!(KUBERNETES.contains("path: /.sessiongate/readyz"));
    assert!(KUBERNETES.contains("path: /.sessiongate/healthz"));
}
