//! The deployment examples in deploy/ hold configs sessiongate accepts (the compose files'
//! sessiongate.toml and the ones inside the Kubernetes ConfigMaps, their secret files stood in
//! for by files of the same shape), and their YAML, loaded by a real parser (PyYAML), agrees
//! with those configs, the Dockerfile and the README: ports, probe paths, mount paths, secret
//! files, the metrics scrape annotations, and the volume that holds `session.state_dir`
//! wherever sessions are not in Redis.

use std::net::SocketAddr;
use std::path::Path;

use crate::common::dockerfile::{self, Image, values};
use crate::common::python;
use serde_json::Value;
use sessiongate::Config;
use sessiongate::config::StoreConfig;

const COMPOSE: &str = include_str!("../../deploy/compose/sessiongate.toml");
const COMPOSE_YAML: &str = include_str!("../../deploy/compose/compose.yaml");
const COMPOSE_README: &str = include_str!("../../deploy/compose/README.md");
const SINGLE: &str = include_str!("../../deploy/compose-single/sessiongate.toml");
const SINGLE_YAML: &str = include_str!("../../deploy/compose-single/compose.yaml");
const SINGLE_README: &str = include_str!("../../deploy/compose-single/README.md");
const NGINX: &str = include_str!("../../deploy/compose/nginx.conf");
const KUBERNETES: &str = include_str!("../../deploy/kubernetes/sessiongate.yaml");
const SIDECAR: &str = include_str!("../../deploy/kubernetes/sidecar.yaml");
const README: &str = include_str!("../../README.md");

const BEGINS: &str = "# --- sessiongate.toml begins";
const ENDS: &str = "# --- sessiongate.toml ends";

/// The TOML between a ConfigMap's markers, without the YAML block's indent.
fn configmap_toml(manifest: &str) -> String {
    let start = manifest.find(BEGINS).expect("begin marker");
    let end = manifest.find(ENDS).expect("end marker");
    manifest[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `toml` with each of `secrets` (paths the deployment mounts) replaced by a temporary file
/// of the same shape, validated.
fn validated(toml: &str, secrets: &[String]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = toml.to_string();
    for (i, path) in secrets.iter().enumerate() {
        let file = dir.path().join(format!("secret-{i}"));
        std::fs::write(&file, "x".repeat(48) + "\n").unwrap();
        toml = toml.replace(path, file.to_str().unwrap());
    }
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// The secret files a config names: `session.secret_file` and `redis.password_file`.
fn secret_files(toml: &str) -> Vec<String> {
    let table: toml::Table = toml.parse().unwrap();
    [("session", "secret_file"), ("redis", "password_file")]
        .iter()
        .filter_map(|(t, k)| table.get(*t)?.get(*k)?.as_str().map(str::to_string))
        .collect()
}

/// Every document of a YAML file, as PyYAML loads it.
fn yaml(text: &str) -> Vec<Value> {
    let json = python::run(
        "import json, sys, yaml\n\
         print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))\n",
        text.as_bytes(),
    );
    serde_json::from_str(&json).unwrap()
}

/// A README section: from its heading to the next heading of the same or a higher level.
fn readme_section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        + 1;
    let level = heading.split(' ').next().unwrap();
    let rest = &README[start + heading.len()..];
    let end = (1..=level.len())
        .filter_map(|n| rest.find(&format!("\n{} ", "#".repeat(n))))
        .min()
        .unwrap_or(rest.len());
    &README[start..start + heading.len() + end]
}

fn unspecified(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified()
}

/// The image's one volume, where the examples keep `session.state_dir`.
fn image_volume() -> String {
    let Image { volumes, .. } = dockerfile::image();
    let [volume] = &volumes[..] else {
        panic!("one VOLUME: {volumes:?}");
    };
    volume.clone()
}

/// The Dockerfile makes its volume's directory for its user, 0700 (sessiongate refuses one
/// others may write to), before `VOLUME` declares it: Docker discards what later steps change
/// there, and fills each new volume from that directory, owner and mode included. The README
/// mounts a named volume there and names it as `state_dir`.
#[test]
fn the_dockerfile_makes_its_state_volume_for_its_user() {
    let volume = image_volume();
    let all = dockerfile::instructions();
    let run = &all[all.iter().rposition(|i| i.instruction == "FROM").unwrap()..];
    let declared = run.iter().position(|i| i.instruction == "VOLUME").unwrap();
    let user = *values(run, "USER").last().expect("USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let made: Vec<&str> = values(&run[..declared], "RUN")
        .into_iter()
        .flat_map(|r| r.split("&&"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.last() == Some(&volume.as_str()))
        .unwrap_or_else(|| panic!("no RUN before VOLUME makes {volume}"));
    assert_eq!(made[..2], ["install", "-d"], "{made:?}");
    let option = |flag: &str| {
        let at = made
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("{flag} missing: {made:?}"));
        made[at + 1]
    };
    assert_eq!(option("-m"), "0700");
    assert_eq!(option("-o"), uid);
    assert_eq!(option("-g"), gid);

    let readme = readme_section("### Container");
    for said in [
        format!("-v sessiongate-state:{volume} "),
        format!("state_dir = \"{volume}\""),
    ] {
        assert!(
            readme.contains(&said),
            "README ### Container lacks {said:?}"
        );
    }
}

#[test]
fn the_compose_config_is_valid_and_uses_redis() {
    let config = validated(COMPOSE, &secret_files(COMPOSE));
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

/// compose.yaml: each replica mounts sessiongate.toml where the image reads it, has the
/// secrets its config names, and is health-checked with `sessiongate healthcheck`; nginx
/// balances over the port the config listens on, published where the README says.
#[test]
fn the_compose_file_agrees_with_its_config_the_dockerfile_and_the_readme() {
    let Image {
        port, config: path, ..
    } = dockerfile::image();
    let config = validated(COMPOSE, &secret_files(COMPOSE));
    assert_eq!(config.server.listen.port(), port);
    assert!(unspecified(config.server.listen));

    let docs = yaml(COMPOSE_YAML);
    let services = docs[0]["services"].as_object().unwrap();
    let replicas: Vec<&String> = services
        .keys()
        .filter(|k| k.starts_with("sessiongate"))
        .collect();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for name in &replicas {
        let service = &services[*name];
        let volumes: Vec<&str> = service["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            volumes.contains(&format!("./sessiongate.toml:{path}:ro").as_str()),
            "{name}: {volumes:?}"
        );
        let secrets: Vec<String> = service["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("/run/secrets/{}", s.as_str().unwrap()))
            .collect();
        for file in secret_files(COMPOSE) {
            assert!(secrets.contains(&file), "{name} lacks {file}: {secrets:?}");
        }
        assert_eq!(
            service["healthcheck"]["test"],
            serde_json::json!(["CMD", "sessiongate", "healthcheck"]),
            "{name}"
        );
        assert!(
            NGINX.contains(&format!("server {name}:{port};")),
            "nginx.conf does not balance over {name}:{port}"
        );
    }
    let published: Vec<&str> = services["lb"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(published, ["8080:8080"]);
    let readme = readme_section("### docker compose");
    assert!(readme.contains("deploy/compose"), "{readme}");
    assert!(readme.contains("http://localhost:8080"), "{readme}");
}

/// compose-single: one sessiongate, its sessions in `session.state_dir` on a named volume
/// mounted there, where the image declares its volume (so a new volume starts as the image's
/// directory). No secret file: the key is made and kept in state_dir. Docker waits for the
/// requests in flight and then for the state to be written before it kills the container.
#[test]
fn the_single_compose_file_keeps_sessions_on_a_named_volume_at_state_dir() {
    let Image {
        port, config: path, ..
    } = dockerfile::image();
    let volume = image_volume();
    assert!(
        secret_files(SINGLE).is_empty(),
        "the session key is kept in state_dir"
    );
    let config = validated(SINGLE, &[]);
    assert!(matches!(config.session.store, StoreConfig::Memory));
    assert!(config.session.secret.is_none());
    let state_dir = config.session.state_dir.as_deref().expect("state_dir");
    assert_eq!(state_dir, Path::new(&volume));
    assert_eq!(config.server.listen.port(), port);
    assert!(unspecified(config.server.listen));

    let docs = yaml(SINGLE_YAML);
    let services = docs[0]["services"].as_object().unwrap();
    let gates: Vec<&String> = services
        .keys()
        .filter(|k| k.starts_with("sessiongate"))
        .collect();
    assert_eq!(gates, ["sessiongate"], "one sessiongate per volume");
    let service = &services["sessiongate"];
    assert!(service["deploy"]["replicas"].is_null() && service["scale"].is_null());
    let mounts: Vec<&str> = service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&format!("./sessiongate.toml:{path}:ro").as_str()),
        "{mounts:?}"
    );
    // NAME:/var/lib/sessiongate, writable, NAME one of the file's named volumes.
    let state: Vec<&str> = mounts
        .iter()
        .filter_map(|m| m.strip_suffix(&format!(":{volume}")))
        .collect();
    let [name] = state[..] else {
        panic!("one writable mount at {volume}: {mounts:?}");
    };
    assert!(
        docs[0]["volumes"].get(name).is_some(),
        "{name} is not a named volume of compose.yaml"
    );
    assert_eq!(
        service["healthcheck"]["test"],
        serde_json::json!(["CMD", "sessiongate", "healthcheck"])
    );
    assert_eq!(
        service["ports"],
        serde_json::json!([format!("{port}:{port}")])
    );
    let grace = humantime::parse_duration(service["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(
        grace > config.server.shutdown_timeout,
        "stop_grace_period {grace:?}"
    );

    for said in ["docker compose restart", "One sessiongate per volume"] {
        assert!(SINGLE_README.contains(said), "{said:?}: {SINGLE_README}");
    }
    assert!(
        COMPOSE_README.contains("../compose-single"),
        "{COMPOSE_README}"
    );
    let readme = readme_section("### docker compose");
    assert!(readme.contains("deploy/compose-single"), "{readme}");
}

/// What a Kubernetes example holds, read from its YAML.
struct Kubernetes {
    config: Config,
    toml: String,
    deployment: Value,
    sessiongate: Value,
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {list}"))
}

/// The container port a probe or a Service names (by port name or number).
fn resolve_port(container: &Value, port: &Value) -> u64 {
    match port {
        Value::String(name) => named(&container["ports"], name)["containerPort"]
            .as_u64()
            .unwrap(),
        other => other.as_u64().unwrap(),
    }
}

/// Checks a Kubernetes example against its own config, the Dockerfile and the README, and
/// returns what it holds for the example's own checks.
fn kubernetes(manifest: &str, file: &str) -> Kubernetes {
    let Image {
        port, config: path, ..
    } = dockerfile::image();
    let docs = yaml(manifest);
    let deployments = of_kind(&docs, "Deployment");
    let deployment = deployments
        .iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/part-of"].is_null())
        .copied()
        .expect("the sessiongate Deployment");
    let pod = &deployment["spec"]["template"];
    let sessiongate = named(&pod["spec"]["containers"], "sessiongate");
    let volumes = &pod["spec"]["volumes"];
    let mounts = sessiongate["volumeMounts"].as_array().unwrap();

    // The ConfigMap is mounted where the image reads its config.
    let (dir, file_name) = path.rsplit_once('/').unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{file}: nothing mounted at {dir}"));
    let volume = named(volumes, mount["name"].as_str().unwrap());
    let configmap_name = &volume["configMap"]["name"];
    let configmap = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == *configmap_name)
        .unwrap_or_else(|| panic!("{file}: no ConfigMap {configmap_name}"));
    let toml = configmap["data"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: the ConfigMap has no {file_name}"));
    // The markers hold the whole file.
    assert!(toml.starts_with(BEGINS), "{file}");
    assert_eq!(toml.trim_end().lines().last(), Some(ENDS), "{file}");
    assert_eq!(
        configmap_toml(manifest).trim_end(),
        toml.lines()
            .skip(1)
            .take_while(|l| *l != ENDS)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end(),
        "{file}"
    );

    // Each secret file is in a Secret volume mounted for sessiongate.
    let secrets = secret_files(toml);
    assert!(!secrets.is_empty(), "{file}: the session secret is a file");
    for secret in &secrets {
        let (dir, key) = secret.rsplit_once('/').unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{file}: {secret} is in no mounted volume"));
        let volume = named(volumes, mount["name"].as_str().unwrap());
        let items = &volume["secret"]["items"];
        let item = items
            .as_array()
            .unwrap_or_else(|| panic!("{file}: {dir} is not a Secret with items"))
            .iter()
            .find(|i| i["path"] == key)
            .unwrap_or_else(|| panic!("{file}: the Secret volume has no {key}"));
        let secret_name = &volume["secret"]["secretName"];
        let secret_doc = of_kind(&docs, "Secret")
            .into_iter()
            .find(|s| s["metadata"]["name"] == *secret_name)
            .unwrap_or_else(|| panic!("{file}: no Secret {secret_name}"));
        assert!(
            secret_doc["stringData"][item["key"].as_str().unwrap()].is_string(),
            "{file}: Secret {secret_name} has no {}",
            item["key"]
        );
    }
    let config = validated(toml, &secrets);

    // The listener: all interfaces of the pod, on the image's port, named http.
    let listen = config.server.listen;
    assert!(unspecified(listen), "{file}: {listen}");
    assert_eq!(listen.port(), port, "{file}: the Dockerfile's EXPOSE");
    let http = resolve_port(sessiongate, &Value::from("http"));
    assert_eq!(http, u64::from(port), "{file}");

    // The probes ask sessiongate's own endpoints on that port.
    let prefix = &config.auth.prefix;
    for (probe, endpoint) in [("livenessProbe", "healthz"), ("readinessProbe", "readyz")] {
        let get = &sessiongate[probe]["httpGet"];
        assert_eq!(
            get["path"],
            format!("{prefix}/{endpoint}"),
            "{file}: {probe}"
        );
        assert_eq!(resolve_port(sessiongate, &get["port"]), http, "{file}");
    }

    // Metrics: a port of their own, named and annotated for the scraper.
    let metrics = config
        .metrics
        .unwrap_or_else(|| panic!("{file}: [metrics]"));
    assert!(
        unspecified(metrics),
        "{file}: the scraper comes from outside"
    );
    assert_eq!(
        resolve_port(sessiongate, &Value::from("metrics")),
        u64::from(metrics.port()),
        "{file}"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{file}");
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics.port().to_string(),
        "{file}"
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{file}");

    // The Service sends traffic to the listener, and never to the metrics port.
    let labels = &pod["metadata"]["labels"];
    let service = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| {
            let selector = s["spec"]["selector"].as_object().unwrap();
            selector.iter().all(|(k, v)| labels[k] == *v)
        })
        .unwrap_or_else(|| panic!("{file}: no Service selects the pod"));
    let targets: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| resolve_port(sessiongate, &p["targetPort"]))
        .collect();
    assert_eq!(targets, [http], "{file}");

    // The image's user, not root.
    let context = &sessiongate["securityContext"];
    assert_eq!(context["runAsNonRoot"], true, "{file}");
    let uid = context["runAsUser"]
        .as_u64()
        .or_else(|| pod["spec"]["securityContext"]["runAsUser"].as_u64());
    assert_eq!(uid, Some(10001), "{file}");

    // Without Redis, sessions are kept in session.state_dir, on a ReadWriteOnce
    // PersistentVolumeClaim mounted where the image declares its volume. state_dir is a
    // directory inside the mount, not the mount itself: Kubernetes leaves a volume's top
    // directory owned by root and writable by the fsGroup, which sessiongate refuses
    // (container.rs runs both). The fsGroup is sessiongate's group, so it can make state_dir
    // there. One replica, replaced with Recreate: a second sessiongate on the directory
    // refuses to start, so a rolling update would never finish.
    match &config.session.state_dir {
        None => assert!(
            matches!(config.session.store, StoreConfig::Redis(_)),
            "{file}: sessions in memory only"
        ),
        Some(state_dir) => {
            let volume = image_volume();
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"] == volume.as_str())
                .unwrap_or_else(|| panic!("{file}: nothing mounted at {volume}"));
            assert_ne!(mount["readOnly"], true, "{file}");
            assert_eq!(
                state_dir.parent(),
                Some(Path::new(&volume)),
                "{file}: state_dir is a directory of its own on the volume"
            );
            let claim_name = &named(volumes, mount["name"].as_str().unwrap())["persistentVolumeClaim"]
                ["claimName"];
            let claim = of_kind(&docs, "PersistentVolumeClaim")
                .into_iter()
                .find(|c| c["metadata"]["name"] == *claim_name)
                .unwrap_or_else(|| panic!("{file}: no PersistentVolumeClaim {claim_name}"));
            assert_eq!(
                claim["spec"]["accessModes"],
                serde_json::json!(["ReadWriteOnce"]),
                "{file}"
            );
            assert_eq!(deployment["spec"]["replicas"], 1, "{file}");
            assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{file}");
            let gid = context["runAsGroup"]
                .as_u64()
                .or_else(|| pod["spec"]["securityContext"]["runAsGroup"].as_u64());
            assert!(gid.is_some(), "{file}: runAsGroup");
            assert_eq!(
                pod["spec"]["securityContext"]["fsGroup"].as_u64(),
                gid,
                "{file}: fsGroup"
            );
        }
    }

    // The README's Kubernetes section names the file.
    let readme = readme_section("### Kubernetes");
    assert!(
        readme.contains(&format!("deploy/kubernetes/{file}")),
        "README ### Kubernetes does not mention {file}"
    );

    Kubernetes {
        config,
        toml: toml.to_string(),
        deployment: deployment.clone(),
        sessiongate: sessiongate.clone(),
    }
}

#[test]
fn the_kubernetes_redis_example_agrees_with_its_config_the_dockerfile_and_the_readme() {
    let k = kubernetes(KUBERNETES, "sessiongate.yaml");
    assert!(k.toml.contains("[session]"), "{}", k.toml);
    assert!(matches!(k.config.session.store, StoreConfig::Redis(_)));
    assert!(k.config.session.secure, "behind an HTTPS ingress");
    assert_eq!(k.deployment["spec"]["replicas"], 2);

    // The commented Sentinel alternative, uncommented in place of url, is accepted too.
    let mut replaced = 0;
    let sentinel_toml = k
        .toml
        .lines()
        .filter(|l| !l.starts_with("url = \"redis://"))
        .map(|l| match l.strip_prefix("# ") {
            Some(u) if u.starts_with("sentinels = ") || u.starts_with("master_name = ") => {
                replaced += 1;
                u
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(replaced, 2, "{}", k.toml);
    let config = validated(&sentinel_toml, &secret_files(&sentinel_toml));
    let StoreConfig::Redis(redis) = &config.session.store else {
        panic!("{sentinel_toml}");
    };
    let sentinel = redis.sentinel.as_ref().expect("sentinels in place of url");
    assert_eq!(sentinel.master_name, "mymaster");
    assert_eq!(
        sentinel.nodes[0],
        ("redis-sentinel-0.redis-sentinel".to_string(), 26379)
    );
}

/// The sidecar: the app in the same pod on loopback only, with no port of its own; one
/// replica on the memory store.
#[test]
fn the_kubernetes_sidecar_example_agrees_with_its_config_the_dockerfile_and_the_readme() {
    let k = kubernetes(SIDECAR, "sidecar.yaml");
    assert!(matches!(k.config.session.store, StoreConfig::Memory));
    assert!(
        k.config.session.state_dir.is_some(),
        "a new pod signs nobody out"
    );
    assert!(k.config.session.secure, "behind an HTTPS ingress");
    assert_eq!(k.deployment["spec"]["replicas"], 1, "the memory store");

    let containers = k.deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    let app = named(
        &k.deployment["spec"]["template"]["spec"]["containers"],
        "app",
    );
    assert!(app["ports"].is_null(), "the app publishes no port");
    assert!(app["volumeMounts"].is_null(), "the app sees no secret");
    let target = k.config.upstream.target.as_ref().expect("upstream.url");
    assert_eq!(target.authority, "127.0.0.1:3000");
    assert_eq!(
        named(&app["env"], "LISTEN_ADDRESS")["value"],
        "127.0.0.1:3000"
    );
    assert!(
        k.sessiongate["image"]
            .as_str()
            .unwrap()
            .contains("sessiongate")
    );
}
