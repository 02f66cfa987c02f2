//! `[[users]]`: names that can travel in a header, password hashes, groups and TOTP secrets.

use secrecy::{ExposeSecret, SecretString};

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::read_secret;
use crate::credentials::password::PasswordHash;
use crate::credentials::totp::TotpSecret;
use crate::gate::policy::UserConfig;
use crate::gate::rules;

/// Every `[[users]]` entry; there must be one. With `require_totp`, each needs a TOTP secret.
pub(super) fn validate_users(
    written: Vec<file::User>,
    require_totp: bool,
    providers: bool,
) -> Result<Vec<UserConfig>, ConfigError> {
    if written.is_empty() && !providers {
        return Err(invalid(
            "users",
            "no [[users]] or [[providers]] configured: nobody could log in (add a user with `sessiongate hash-password`, or a provider)",
        ));
    }
    let mut users: Vec<UserConfig> = Vec::with_capacity(written.len());
    for (i, u) in written.into_iter().enumerate() {
        let user = validate_user(i, u, &users)?;
        if require_totp && user.totp.is_none() {
            let name = &user.name;
            return Err(invalid(
                format!("users[{i}].totp_secret"),
                format!(
                    "auth.require_second_factor is on but user {name:?} has no totp_secret or totp_secret_file (make one with `sessiongate totp-setup --user {name:?}`)"
                ),
            ));
        }
        users.push(user);
    }
    Ok(users)
}

/// `users[i]`, checked against the users before it.
fn validate_user(
    i: usize,
    u: file::User,
    earlier: &[UserConfig],
) -> Result<UserConfig, ConfigError> {
    let name = u.name.trim();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(invalid(
            format!("users[{i}].name"),
            "must be 1 to 256 characters without control characters",
        ));
    }
    // The name travels in a header; bytes past ASCII would reach the app as raw UTF-8
    // that every framework decodes differently.
    if !name.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(invalid(
            format!("users[{i}].name"),
            "must be sendable in an HTTP header (visible ASCII and spaces)",
        ));
    }
    if earlier.iter().any(|other| other.name == name) {
        return Err(invalid(
            format!("users[{i}].name"),
            format!("user {name:?} is configured twice"),
        ));
    }
    let password_hash = PasswordHash::parse(&u.password_hash)
        .map_err(|reason| invalid(format!("users[{i}].password_hash"), reason))?;
    Ok(UserConfig {
        name: name.to_string(),
        password_hash,
        groups: groups(i, u.groups.as_deref())?,
        totp: user_totp(i, u.totp_secret.as_ref(), u.totp_secret_file.as_deref())?,
    })
}

/// `users[i].groups`, each a group name, duplicates dropped.
fn groups(i: usize, listed: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let mut groups: Vec<String> = Vec::new();
    for (j, g) in listed.into_iter().flatten().enumerate() {
        if !rules::is_group_name(g) {
            return Err(invalid(
                format!("users[{i}].groups[{j}]"),
                format!("{g:?} is not a group name (letters, digits and -_. only)"),
            ));
        }
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    Ok(groups)
}

/// `users[i].totp_secret` or `users[i].totp_secret_file` (not both), as a checked secret.
fn user_totp(
    i: usize,
    inline: Option<&SecretString>,
    file: Option<&str>,
) -> Result<Option<TotpSecret>, ConfigError> {
    let (key, text) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("users[{i}].totp_secret"),
                "set either totp_secret or totp_secret_file, not both",
            ));
        }
        (Some(text), None) => (format!("users[{i}].totp_secret"), text.clone()),
        (None, Some(path)) => {
            let key = format!("users[{i}].totp_secret_file");
            let text = read_secret(&key, path)?;
            (key, text)
        }
        (None, None) => return Ok(None),
    };
    // The reason never quotes the secret: config errors are printed and logged.
    TotpSecret::from_base32(text.expose_secret())
        .map(Some)
        .map_err(|reason| invalid(key, reason))
}
