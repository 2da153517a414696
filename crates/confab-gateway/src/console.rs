//! The admin console at `/console/`: one HTML page, one script, one style sheet and an
//! icon, hand-written and built into the binary (no CDN, no build step), and the one
//! endpoint only the console uses, `GET /console/api/stats`.
//!
//! The console signs in with an app's id and master key and does everything else
//! through the REST API (`/1.2/rtm/…`, `X-LC-Key: <masterKey>,master`): it can do
//! nothing the master key cannot do over REST. The key stays in the tab's
//! `sessionStorage` and goes only into request headers.
//!
//! Every response carries a strict `Content-Security-Policy` (scripts and styles from
//! this origin only, no inline script, requests to this origin only, no framing, no form
//! submissions), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! The assets are revalidated on every load (`Cache-Control: no-cache` with an `ETag`
//! of their content), so an upgraded binary never serves a stale script with a new page.

use crate::Gateway;
use crate::rest::RestError;
use crate::rest::auth::authenticate;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use confab_engine::metrics::{HistogramSnapshot, METRICS, resident_bytes};
use serde_json::{Value, json};

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// The console's `Content-Security-Policy`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An asset of the console: its bytes, content type and entity tag.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// 64-bit FNV-1a of `bytes`, computed at compile time for the assets' entity tags.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`.
const fn etag_of(body: &str) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(body.as_bytes());
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

const INDEX_TAG: [u8; 18] = etag_of(INDEX_HTML);
const JS_TAG: [u8; 18] = etag_of(CONSOLE_JS);
const CSS_TAG: [u8; 18] = etag_of(CONSOLE_CSS);
const ICON_TAG: [u8; 18] = etag_of(FAVICON_SVG);

fn tag(bytes: &'static [u8; 18]) -> &'static str {
    std::str::from_utf8(bytes).unwrap_or("\"0\"")
}

/// The console's routes.
pub(crate) fn router() -> Router<Gateway> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route(
            "/console/",
            get(|h: HeaderMap| async move {
                serve(
                    &h,
                    &Asset {
                        body: INDEX_HTML,
                        content_type: "text/html; charset=utf-8",
                        etag: tag(&INDEX_TAG),
                    },
                )
            }),
        )
        .route(
            "/console/console.js",
            get(|h: HeaderMap| async move {
                serve(
                    &h,
                    &Asset {
                        body: CONSOLE_JS,
                        content_type: "text/javascript; charset=utf-8",
                        etag: tag(&JS_TAG),
                    },
                )
            }),
        )
        .route(
            "/console/console.css",
            get(|h: HeaderMap| async move {
                serve(
                    &h,
                    &Asset {
                        body: CONSOLE_CSS,
                        content_type: "text/css; charset=utf-8",
                        etag: tag(&CSS_TAG),
                    },
                )
            }),
        )
        .route(
            "/console/favicon.svg",
            get(|h: HeaderMap| async move {
                serve(&h, &Asset { body: FAVICON_SVG, content_type: "image/svg+xml", etag: tag(&ICON_TAG) })
            }),
        )
        .route("/console/api/stats", get(stats))
}

/// The headers every console response carries.
fn secure(mut response: Response, cache: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn serve(headers: &HeaderMap, asset: &Asset) -> Response {
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    let response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let mut response = secure(response, "no-cache");
    response.headers_mut().insert(header::ETAG, HeaderValue::from_static(asset.etag));
    response
}

/// A histogram for the console: bounds (seconds), per-bucket counts (the last above
/// every bound), sum and count.
fn histogram(h: &HistogramSnapshot) -> Value {
    let le: Vec<f64> = h.bounds().iter().filter_map(|b| b.parse().ok()).collect();
    json!({"le": le, "counts": h.counts, "sum": h.sum, "count": h.count})
}

/// `GET /console/api/stats` (master key): what the console's live charts draw, read
/// from the same registry as `/metrics`:
///
/// - `app`: the signed-in app: its open `sessions` on this node, and distinct
///   `clients_online` and `clients_today` on every node (as `GET /1.2/rtm/stats`);
/// - `node`: the whole process, every app together (as `/metrics`): `sessions`,
///   `connections`, the counters `messages_stored`, `messages_delivered` and `acks`,
///   the `delivery_seconds` and `commit_seconds` histograms, `resident_bytes`;
/// - `time`: the server's clock (ms), to turn counter differences into rates.
///
/// In a cluster each node answers for itself, but for the app's client counts (the
/// console sees the node its requests reach). The process-wide numbers are traffic totals with no ids, the same an open
/// `/metrics` shows.
async fn stats(State(gateway): State<Gateway>, headers: HeaderMap) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let engine = &gateway.engine;
    let (clients_online, clients_today) = engine.admin_stats(&caller.app_id).await?;
    let app_sessions: usize = engine.sessions_by_wire(Some(&caller.app_id)).iter().sum();
    let node_sessions: usize = engine.sessions_by_wire(None).iter().sum();
    let body = json!({
        "time": engine.now_ms(),
        "app": {
            "id": caller.app_id,
            "sessions": app_sessions,
            "clients_online": clients_online,
            "clients_today": clients_today.max(clients_online),
        },
        "node": {
            "sessions": node_sessions,
            "connections": METRICS.connections().iter().sum::<u64>(),
            "messages_stored": METRICS.messages_stored(),
            "messages_delivered": METRICS.messages_delivered(),
            "acks": METRICS.acks(),
            "delivery_seconds": histogram(&METRICS.delivery()),
            "commit_seconds": histogram(&METRICS.commit()),
            "resident_bytes": resident_bytes(),
        },
    });
    Ok(secure(axum::Json(body).into_response(), "no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_follow_the_content() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        const A: [u8; 18] = etag_of("a");
        assert_eq!(tag(&A), "\"af63dc4c8601ec8c\"");
        assert_ne!(tag(&JS_TAG), tag(&CSS_TAG));
        for t in [tag(&INDEX_TAG), tag(&JS_TAG), tag(&CSS_TAG)] {
            assert_eq!(t.len(), 18);
            assert!(HeaderValue::from_str(t).is_ok());
        }
    }

    #[test]
    fn the_assets_load_nothing_from_elsewhere_and_run_no_inline_script() {
        let lower = INDEX_HTML.to_ascii_lowercase();
        // One script, by URL; no inline handlers or styles.
        assert_eq!(lower.matches("<script").count(), 1);
        assert!(lower.contains("<script src=\"console.js\""));
        for forbidden in
            [" onclick=", " onload=", " onsubmit=", " style=", "<style", "javascript:", "http://", "https://"]
        {
            assert!(!lower.contains(forbidden), "index.html contains {forbidden:?}");
        }
        for asset in [
            CONSOLE_JS,
            CONSOLE_CSS,
            FAVICON_SVG.replace("xmlns=\"http://www.w3.org/2000/svg\"", "").as_str(),
        ] {
            assert!(!asset.contains("http://") && !asset.contains("https://"), "no remote URLs");
        }
        // Data never reaches the DOM as markup.
        for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!CONSOLE_JS.contains(forbidden), "console.js uses {forbidden}");
        }
    }
}
