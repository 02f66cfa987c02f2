//! The test suite's Python, with the parsers some tests use (prometheus-client, dockerfile-parse,
//! pyyaml) and the upgrade tests' app server and HTTP/2 library (hypercorn, h2), in the
//! virtual environment tests/install-deps.sh makes under target/.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The virtual environment's python3.
pub fn interpreter() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-python/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run tests/install-deps.sh first",
        python.display()
    );
    python
}

/// Runs `script` with `input` on its standard input and returns what it printed. Panics with
/// the script's error output when it fails, so a parser's complaint is the test's message.
pub fn run(script: &str, input: &[u8]) -> String {
    let mut child = Command::new(interpreter())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the test Python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to the test Python");
    let out = child.wait_with_output().expect("wait for the test Python");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}
