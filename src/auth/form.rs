//! The forms sessiongate's own POST endpoints read (sign-in, code, logout, sessions page):
//! urlencoded, size-limited, and checked against cross-site posts (CSRF) in one place.

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::csrf::{self, FormTokens};
use crate::http::response::{self, Body, no_store};

/// Largest form body read; a username and password fit many times over.
const MAX_FORM_BYTES: usize = 8 * 1024;

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
}

/// Reads an urlencoded form (login or logout), or answers why it can't.
async fn read_form(req: Request<Incoming>) -> Result<Form, Response<Body>> {
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
        return Err(response::text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the form must be sent as application/x-www-form-urlencoded",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(response::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the login form is larger than {MAX_FORM_BYTES} bytes"),
            ));
        }
        Err(_) => {
            return Err(response::text(
                StatusCode::BAD_REQUEST,
                "the login form could not be read",
            ));
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
            _ => {}
        }
    }
    Ok(form)
}

fn forbidden(message: &str) -> Response<Body> {
    let mut res = response::text(StatusCode::FORBIDDEN, message);
    no_store(&mut res);
    res
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
) -> Result<Form, Response<Body>> {
    let origin = csrf::origin_of(&req);
    if origin == csrf::Origin::CrossSite {
        return Err(forbidden(
            "cross-site request refused: this form only accepts posts from its own site",
        ));
    }
    const NO_TOKEN: &str = "missing, expired or another browser's form token: load the form again in this browser and resubmit";
    const NO_COOKIE: &str = "form token refused: the post came without the cookie that the form's page set; load the form in this browser and post it with that cookie (a script must keep cookies between the GET and the POST)";
    let form = match read_form(req).await {
        Ok(form) => form,
        // No browser signal and no form at all: what is missing is the token.
        Err(res)
            if origin == csrf::Origin::Unknown
                && res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
        {
            return Err(forbidden(NO_TOKEN));
        }
        Err(res)
            if bodiless_ok
                && origin == csrf::Origin::SameOrigin
                && res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
        {
            Form::default()
        }
        Err(res) => return Err(res),
    };
    if origin == csrf::Origin::Unknown {
        let Some(binding) = binding else {
            return Err(forbidden(NO_COOKIE));
        };
        if !tokens.verify(&form.csrf, binding) {
            return Err(forbidden(NO_TOKEN));
        }
    }
    Ok(form)
}
