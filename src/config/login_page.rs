//! `[login_page]`: the branding (text only ever printed escaped, an accent that can only be a
//! colour, a logo) and the sign-in template, read and compiled into the pages at load.

use std::path::Path;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::read_limited;
use crate::pages::{Branding, Logo, Pages, UserTemplate};

/// `[login_page]`, validated: text that is only ever printed escaped, an accent that can only
/// be a colour, and the files it names read.
#[derive(Debug, Clone)]
pub struct LoginPageConfig {
    pub branding: Branding,
    pub template: Option<UserTemplate>,
}

/// Largest `login_page.logo` read; a logo is a few KiB.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// Largest `login_page.template` read.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

pub(super) fn validate_login_page(p: &file::LoginPage) -> Result<LoginPageConfig, ConfigError> {
    let title = one_line("login_page.title", p.title.as_deref(), 120)?
        .unwrap_or_else(|| Branding::default().title);
    let app_name = one_line("login_page.app_name", p.app_name.as_deref(), 120)?;
    let message = one_line("login_page.message", p.message.as_deref(), 500)?;
    let accent_color = match &p.accent_color {
        None => crate::pages::DEFAULT_ACCENT.to_string(),
        Some(text) => crate::pages::parse_color(text).ok_or_else(|| {
            invalid(
                "login_page.accent_color",
                format!(
                    "{text:?} is not a colour; write \"#rgb\" or \"#rrggbb\", e.g. \"#1f5fbf\""
                ),
            )
        })?,
    };
    let logo = p.logo.as_deref().map(logo).transpose()?;
    let template = p.template.as_deref().map(template).transpose()?;
    Ok(LoginPageConfig {
        branding: Branding {
            title,
            app_name,
            message,
            accent_color,
            logo,
        },
        template,
    })
}

/// The pages `login_page` makes, for sessiongate's endpoints under `prefix`; a template that
/// does not compile is refused here, at load.
pub(super) fn compile_pages(
    login_page: &LoginPageConfig,
    prefix: &str,
) -> Result<Pages, ConfigError> {
    Pages::new(
        login_page.branding.clone(),
        login_page.template.as_ref(),
        prefix,
    )
    .map_err(|e| invalid("login_page.template", e.to_string()))
}

/// One line of text: no control characters (a newline included), at most `max` characters.
fn one_line(key: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ConfigError> {
    let Some(text) = value.map(str::trim) else {
        return Ok(None);
    };
    if text.chars().any(char::is_control) || text.chars().count() > max {
        return Err(invalid(
            key,
            format!("must be one line of at most {max} characters"),
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// `login_page.logo`: an SVG or PNG file, by its extension (a PNG must be one).
fn logo(path: &str) -> Result<Logo, ConfigError> {
    let content_type = match Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => {
            return Err(invalid(
                "login_page.logo",
                format!("{path:?} must be an .svg or a .png file"),
            ));
        }
    };
    let bytes = read_limited("login_page.logo", path, MAX_LOGO_BYTES)?;
    if content_type == "image/png" && !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(invalid(
            "login_page.logo",
            format!("{path:?} is not a PNG image"),
        ));
    }
    Ok(Logo {
        bytes: bytes.into(),
        content_type,
    })
}

/// `login_page.template`: UTF-8 text, compiled later with the rest of the pages.
fn template(path: &str) -> Result<UserTemplate, ConfigError> {
    let bytes = read_limited("login_page.template", path, MAX_TEMPLATE_BYTES)?;
    let source = String::from_utf8(bytes)
        .map_err(|_| invalid("login_page.template", format!("{path:?} is not UTF-8 text")))?;
    Ok(UserTemplate {
        path: path.to_string(),
        source,
    })
}
