//! `sessiongate hash-password`: the password on standard input, its argon2id hash (in the
//! PHC string form `[[users]] password_hash` takes) on standard output.

use std::io::Read;

/// The hash of the first line `input` holds, without its line ending.
pub fn run(mut input: impl Read) -> Result<String, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(
            "no password on stdin (try: echo -n 'secret' | sessiongate hash-password)".into(),
        );
    }
    crate::credentials::password::hash_password(password.as_bytes())
}
