//! The gate's refusals as answers: which [`Refusal`] each decision is, with what a browser's
//! page needs (the sign-in address, who is signed in and a token to sign out). A browser
//! navigation gets a page (or the sign-in redirect), anything else JSON it can act on.

use http::{HeaderMap, Method, Request, Response};

use crate::app::App;
use crate::auth::csrf::Binding;
use crate::gate::Decision;
use crate::http::error::{Refusal, SignedIn, is_navigation};
use crate::proxy::Body;

/// The answer to a refused request: `decision` is `LoginRequired`, `Forbidden`,
/// `Unavailable` or `CrossSiteUpgrade`.
pub fn answer<B>(app: &App, req: &Request<B>, decision: &Decision) -> Response<Body> {
    let here = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    answer_for(app, req.method(), req.headers(), here, decision)
}

/// [`answer`] for a request given by its parts (forward-auth judges a request it only reads
/// about): its method and headers, and `here`, the return address for the sign-in page.
pub fn answer_for(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    here: &str,
    decision: &Decision,
) -> Response<Body> {
    let navigation = is_navigation(method, headers);
    let refusal = refusal(app, headers, here, decision, navigation);
    app.pages().refuse(&refusal, navigation)
}

/// The refusal `decision` is. Who is signed in is named only for a browser's page, whose
/// sign-out form's token is bound to the session cookie the request brought (the one the
/// gate judged).
fn refusal<'a>(
    app: &'a App,
    headers: &HeaderMap,
    here: &str,
    decision: &'a Decision,
    navigation: bool,
) -> Refusal<'a> {
    match decision {
        Decision::LoginRequired => {
            Refusal::login_required(&app.routes.login, here, &app.routes.unauthorized_json)
        }
        Decision::Forbidden { user } => Refusal::Forbidden {
            signed_in: user.as_ref().filter(|_| navigation).map(|user| SignedIn {
                user: &user.name,
                logout: &app.routes.logout,
                // Always there when a user is: the user was found by this cookie.
                csrf: app
                    .gate
                    .session_id(headers)
                    .map(|id| app.tokens.issue(Binding::Session(id.as_bytes())))
                    .unwrap_or_default(),
            }),
        },
        Decision::Unavailable => Refusal::StoreUnavailable { cause: None },
        Decision::CrossSiteUpgrade => Refusal::CrossSiteUpgrade,
        Decision::Allow { .. } | Decision::Public { .. } | Decision::Own(_) => {
            Refusal::Internal("a request the gate let through reached the refusal path; refused")
        }
    }
}
