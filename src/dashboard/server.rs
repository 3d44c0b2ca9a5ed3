//! The HTTP side: the routes, the login check in front of them, the security headers on every
//! answer, and the two compiled-in assets.
//!
//! Only `/login` and `/assets/*` (the stylesheet and the script, which hold no session data)
//! answer without the session cookie; everything else, unknown paths included, answers 401
//! with the login form. Every answer carries a Content-Security-Policy that allows script only
//! from `/assets/app.js` and loads nothing from elsewhere, and `Referrer-Policy: no-referrer`,
//! so that a login link in the address bar is never sent on.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::App;
use super::auth;
use super::live;
use super::pages;
use super::routes;

pub(super) const CSS: &str = include_str!("assets/app.css");
pub(super) const JS: &str = include_str!("assets/app.js");

/// No inline script or style, nothing from another origin, no framing, forms only to here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(routes::fleet))
        .route("/events", get(live::fleet_events))
        .route("/sessions/{name}", get(routes::session))
        .route("/sessions/{name}/events", get(live::session_events))
        .route("/sessions/{name}/{verb}", post(routes::act))
        .route("/login", get(routes::login_link).post(routes::login_form))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .fallback(routes::not_found)
        .layer(middleware::from_fn(framework_refusals))
        .layer(middleware::from_fn_with_state(app.clone(), require_login))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Lets a request through only with a live session cookie, and hands the handlers its
/// [`auth::Visitor`].
async fn require_login(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/login" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let visitor = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(auth::cookie_in)
        .and_then(|cookie| app.auth.visitor(cookie));
    match visitor {
        Some(visitor) => {
            request.extensions_mut().insert(visitor);
            next.run(request).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(None).into_string()),
        )
            .into_response(),
    }
}

/// The refusals the framework writes itself, in plain text (a query or path that does not
/// parse, a method an address does not take), get a page like every other refusal: what is
/// wrong, that nothing was done, and where to go. The status and headers (`Allow`) stay.
async fn framework_refusals(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html
        || !matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
        )
    {
        return response;
    }
    // `/sessions/NAME/WORD` for a word that is no action (nor the stream): no such page.
    let unknown_verb = routes::session_word(&path)
        .is_some_and(|(_, word)| word != "events" && !routes::ACTIONS.contains(&word));
    if status == StatusCode::METHOD_NOT_ALLOWED && unknown_verb {
        return routes::not_found().await;
    }
    let (mut parts, body) = response.into_parts();
    let page = if status == StatusCode::METHOD_NOT_ALLOWED {
        match routes::action_of(&path).filter(|_| method == axum::http::Method::GET) {
            Some(session) => pages::problem_leading(
                "Not a page",
                "This address is where a button of the session's page sends its form; visiting it does nothing.",
                (&format!("/sessions/{session}"), "Open the session"),
            ),
            None => pages::problem(
                "Not taken here",
                &format!("This address does not take a {method}, so nothing was done."),
            ),
        }
    } else {
        let said = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        pages::problem(
            "Cannot read this address",
            &format!(
                "{} Check the link, or start again from the fleet; nothing was done.",
                String::from_utf8_lossy(&said).trim()
            ),
        )
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, axum::body::Body::from(page.into_string()))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages show session state and carry the CSRF token: never from a cache.
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // The URL carries the build's version, so a cached copy is never stale.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}
