//! The repository's Dockerfile as a real parser (the `dockerfile-parse` package) reads it.

use serde::Deserialize;

use super::python;

pub const DOCKERFILE: &str = include_str!("../../../Dockerfile");

/// One instruction, its continuation lines joined.
#[derive(Debug, Deserialize)]
pub struct Instruction {
    pub instruction: String,
    pub value: String,
}

/// The Dockerfile's instructions, without comments.
pub fn instructions() -> Vec<Instruction> {
    let json = python::run(
        "import io, json, sys\n\
         from dockerfile_parse import DockerfileParser\n\
         parser = DockerfileParser(fileobj=io.BytesIO(sys.stdin.buffer.read()))\n\
         print(json.dumps([i for i in parser.structure if i['instruction'] != 'COMMENT']))\n",
        DOCKERFILE.as_bytes(),
    );
    serde_json::from_str(&json).unwrap()
}

/// The values of the instructions named `name` in `stage`.
pub fn values<'a>(stage: &'a [Instruction], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.instruction == name)
        .map(|i| i.value.as_str())
        .collect()
}

/// An exec-form (JSON array) argument list.
pub fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_else(|e| panic!("not exec form ({e}): {value}"))
}

/// What the image it builds runs: its one exposed port, the `--config` of its `CMD`, and the
/// directories it declares volumes at.
pub struct Image {
    pub port: u16,
    pub config: String,
    pub volumes: Vec<String>,
}

pub fn image() -> Image {
    let all = instructions();
    let last = all.iter().rposition(|i| i.instruction == "FROM").unwrap();
    let run = &all[last..];
    let exposed = values(run, "EXPOSE");
    assert_eq!(exposed.len(), 1, "one EXPOSE: {exposed:?}");
    let cmd = exec_form(values(run, "CMD").last().expect("CMD"));
    let [flag, config] = &cmd[..] else {
        panic!("CMD is not --config PATH: {cmd:?}");
    };
    assert_eq!(flag, "--config");
    // `VOLUME ["/a", "/b"]` or `VOLUME /a /b`.
    let volumes = values(run, "VOLUME")
        .into_iter()
        .flat_map(|v| {
            if v.starts_with('[') {
                exec_form(v)
            } else {
                v.split_whitespace().map(str::to_string).collect()
            }
        })
        .collect();
    Image {
        port: exposed[0].parse().unwrap(),
        config: config.clone(),
        volumes,
    }
}
