//! The forms sessiongate's own POST endpoints read (sign-in, code, logout, sessions page):
//! urlencoded, size-limited, and checked against cross-site posts (CSRF) in one place.

use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::csrf::{self, FormTokens};
use crate::http::error::Refusal;

/// Largest form body read: a username and password fit many times over, and a passkey's
/// answer (a few hundred bytes of JSON, percent-encoded) several times.
const MAX_FORM_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub(crate) struct Form {
    pub username: String,
    pub password: String,
    pub rd: String,
    pub csrf: String,
    /// Logout: end every session of the user, not only this one.
    pub everywhere: bool,
    /// The sessions page: the handle of the session to end.
    pub session: String,
    /// The code form: the code from the authenticator app.
    pub code: String,
    /// A passkey ceremony's name, and the browser's answer to it (JSON).
    pub ceremony: String,
    pub credential: String,
    /// The account page: a new passkey's name, and the id of one to remove.
    pub name: String,
    pub passkey: String,
    /// The account page: the TOTP set-up a first code confirms.
    pub setup: String,
}

/// Reads an urlencoded form (login or logout), or answers why it can't.
async fn read_form(req: Request<Incoming>) -> Result<Form, Refusal<'static>> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Refusal::NotAForm);
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::FormTooLarge {
                limit: MAX_FORM_BYTES,
            });
        }
        Err(_) => {
            return Err(Refusal::FormUnreadable);
        }
    };
    let mut form = Form {
        rd: "/".to_string(),
        ..Form::default()
    };
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "username" => form.username = v.into_owned(),
            "password" => form.password = v.into_owned(),
            "rd" => form.rd = v.into_owned(),
            "csrf" => form.csrf = v.into_owned(),
            "everywhere" => form.everywhere = v == "1",
            "session" => form.session = v.into_owned(),
            "code" => form.code = v.into_owned(),
            "ceremony" => form.ceremony = v.into_owned(),
            "credential" => form.credential = v.into_owned(),
            "name" => form.name = v.into_owned(),
            "passkey" => form.passkey = v.into_owned(),
            "setup" => form.setup = v.into_owned(),
            _ => {}
        }
    }
    Ok(form)
}

/// The CSRF rule for our POST endpoints: a browser that says "another site" is refused; a
/// client that says nothing must carry a valid form token bound to `binding`, what its own
/// cookie names (`None`: it brought no such cookie, so no token can be valid). With
/// `bodiless_ok`, a same-origin browser post may come without a form at all (a logout button
/// that is a bare POST).
pub(crate) async fn read_checked_form(
    tokens: &FormTokens,
    req: Request<Incoming>,
    bodiless_ok: bool,
    binding: Option<csrf::Binding<'_>>,
) -> Result<Form, Refusal<'static>> {
    let origin = csrf::origin_of(&req);
    if origin == csrf::Origin::CrossSite {
        return Err(Refusal::CrossSitePost);
    }
    let form = match read_form(req).await {
        Ok(form) => form,
        // No browser signal and no form at all: what is missing is the token.
        Err(Refusal::NotAForm) if origin == csrf::Origin::Unknown => {
            return Err(Refusal::NoFormToken);
        }
        Err(Refusal::NotAForm) if bodiless_ok && origin == csrf::Origin::SameOrigin => {
            Form::default()
        }
        Err(refusal) => return Err(refusal),
    };
    if origin == csrf::Origin::Unknown {
        let Some(binding) = binding else {
            return Err(Refusal::NoFormCookie);
        };
        if !tokens.verify(&form.csrf, binding) {
            return Err(Refusal::NoFormToken);
        }
    }
    Ok(form)
}
