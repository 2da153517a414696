//! HTTP endpoints.

use crate::connection::{Handshake, serve_socket};
use crate::{Gateway, GatewayConfig};
use axum::Router;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use confab_proto::subprotocol::negotiate;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Seconds a router answer may be cached (the v2 SDK needs a number).
const ROUTE_TTL_SECS: u64 = 3600;

/// The router with every endpoint.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/", get(websocket_or_info))
        .route("/v1/route", get(route).options(route_preflight))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(demo_page))
        .route("/demo/AV.realtime.js", get(demo_sdk))
        .merge(crate::rest::router(gateway.clone()))
        .merge(crate::console::router())
        // After every route: the 405 fallback is set on the paths served by then.
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

/// An unrouted path: LeanCloud's error shape, `404 {"code": 404, "error": …}`.
async fn not_found(uri: axum::http::Uri) -> Response {
    let error = format!("Not Found: no endpoint at {}", uri.path());
    (StatusCode::NOT_FOUND, axum::Json(json!({"code": 404, "error": error}))).into_response()
}

/// A served path with another method: `405 {"code": 405, "error": …}` (axum adds the
/// `Allow` header).
pub(crate) async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let error = format!("Method Not Allowed: {method} {}", uri.path());
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(json!({"code": 405, "error": error}))).into_response()
}

/// `GET /metrics`: the Prometheus text exposition. With `metrics_token` set, only for a
/// request bearing it (`Authorization: Bearer TOKEN`); 401 otherwise.
async fn metrics(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    if let Some(token) = &gateway.config.metrics_token {
        let given = header_str(&headers, header::AUTHORIZATION).and_then(bearer_token);
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
            let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")];
            return (StatusCode::UNAUTHORIZED, challenge, "a bearer token is required\n").into_response();
        }
    }
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, gateway.engine.metrics_text().await).into_response()
}

/// `GET /healthz`: 200 `ok` while the store answers, 503 while it does not (a load
/// balancer then sends clients to another node). What failed goes to the log, not to
/// the caller.
async fn healthz(State(gateway): State<Gateway>) -> Response {
    match gateway.engine.store_health().await {
        Ok(()) if gateway.engine.cluster_health() => "ok\n".into_response(),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response(),
    }
}

/// The token of `Bearer <token>`: the scheme in any case (RFC 7235), then one or more
/// spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim_start())
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The WebSocket URL clients should use: from `public_url`, else from the request: its
/// `Host`, or `X-Forwarded-Host` and `X-Forwarded-Proto` when `peer` is a trusted proxy
/// (from anyone else they would let a client choose the URL handed out). A host that is
/// not a plain `host[:port]` or `[v6]:port` falls back to the listen address, so no
/// header can put a path or a scheme into the URL. The scheme is `wss` when the port
/// speaks TLS, unless a trusted proxy's `X-Forwarded-Proto` names the client's.
fn websocket_url(config: &GatewayConfig, headers: &HeaderMap, peer: Option<IpAddr>) -> String {
    if let Some(public) = &config.public_url {
        let public = public.trim_end_matches('/');
        let ws = if let Some(rest) = public.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = public.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            public.to_owned()
        };
        return format!("{ws}/");
    }
    let trusted = peer.is_some_and(|ip| config.trusted_proxies.iter().any(|net| net.contains(ip)));
    // A proxy behind another proxy appends to the list: the first value is the client's.
    let forwarded = |name: &str| {
        let value = if trusted {
            header_str(headers, header::HeaderName::from_bytes(name.as_bytes()).ok()?)
        } else {
            None
        };
        value.and_then(|v| v.split(',').next()).map(str::trim)
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| header_str(headers, header::HOST))
        .filter(|h| valid_authority(h))
        .map_or_else(|| config.listen.to_string(), str::to_owned);
    let secure = match forwarded("x-forwarded-proto") {
        Some(proto) => proto.eq_ignore_ascii_case("https"),
        None => config.tls,
    };
    format!("{}://{host}/", if secure { "wss" } else { "ws" })
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the
/// address `X-Forwarded-For` names for the client. Proxies append the address they
/// received from, so the list is read from the right, past every trusted proxy: the
/// first address that is not one is the client (anything left of it was written by
/// the client itself and proves nothing). An entry that is not an address stops the
/// walk at the last trusted hop. Reported to the app's hooks as `sourceIP`.
pub(crate) fn client_ip(config: &GatewayConfig, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let trusted = |ip: IpAddr| config.trusted_proxies.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if !trusted(peer) {
        return client;
    }
    let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let hops: Vec<&str> = hops.flat_map(|v| v.split(',')).map(str::trim).collect();
    for hop in hops.iter().rev() {
        let parsed = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
            .map(|ip| ip.to_canonical());
        let Some(ip) = parsed else { break };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// Whether `s` is a URL authority without user info: `host`, `host:port`, `[v6]` or
/// `[v6]:port`, where a host is letters, digits, `-`, `.` and `_`.
fn valid_authority(s: &str) -> bool {
    let port_ok = |p: &str| {
        !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        return v6.parse::<Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && port.is_none_or(port_ok)
}

fn with_cors(
    mut response: Response,
    gateway: &Gateway,
    app_id: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let Some(origin) = header_str(headers, header::ORIGIN) else {
        return response;
    };
    let allowed = app_id
        .and_then(|id| gateway.engine.app(id))
        .is_some_and(|app| app.config.origin_allowed(Some(origin)));
    if allowed && let Ok(v) = HeaderValue::from_str(origin) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// `GET /v1/route?appId=…`: the v2 push router (protocol §1.1). `secure` is accepted
/// and ignored: the scheme comes from `public_url` or the request itself, so a plain
/// `ws://` deployment is never sent to `wss://`.
async fn route(
    State(gateway): State<Gateway>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let app_id = q.get("appId").map(String::as_str);
    let response = match app_id.and_then(|id| gateway.engine.app(id)) {
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": 4100, "error": "APP_NOT_AVAILABLE: unknown appId"})),
        )
            .into_response(),
        Some(_) => {
            let peer = peer.ok().map(|ConnectInfo(addr)| addr.ip());
            let url = websocket_url(&gateway.config, &headers, peer);
            axum::Json(json!({"server": url, "secondary": url, "ttl": ROUTE_TTL_SECS, "groupId": "g0", "groupUrl": url}))
                .into_response()
        }
    };
    with_cors(response, &gateway, app_id, &headers)
}

async fn route_preflight(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
    response.headers_mut().insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    with_cors(response, &gateway, q.get("appId").map(String::as_str), &headers)
}

/// `GET /`: the WebSocket endpoint; a plain GET gets a short description.
async fn websocket_or_info(
    State(gateway): State<Gateway>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Confab realtime server. Connect a LeanCloud realtime SDK to this URL (WebSocket).\n",
        )
            .into_response();
    };
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let Some(negotiated) = negotiate(offered, q.get("subprotocol").map(String::as_str)) else {
        return (StatusCode::BAD_REQUEST, "unsupported WebSocket subprotocol\n").into_response();
    };
    let origin = header_str(&headers, header::ORIGIN).map(str::to_owned);
    let frame_bytes = gateway.config.frame_bytes;
    let mut ws = ws
        // tungstenite allocates its whole read buffer per connection: 1 KiB instead of
        // 8 KiB saves ~6.5 KB per idle connection; most frames are far smaller anyway.
        .read_buffer_size(1024)
        // Frames queued together are written together: the writer feeds a batch and
        // flushes once, and with TCP_NODELAY each flush is one send. (0 wrote every
        // frame on its own: 2x the CPU per delivery in a busy room.)
        .write_buffer_size(4096)
        .max_message_size(frame_bytes)
        .max_frame_size(frame_bytes);
    if let Some(echo) = negotiated.echo {
        ws = ws.protocols([echo]);
    }
    let source_ip =
        peer.ok().map(|ConnectInfo(addr)| client_ip(&gateway.config, &headers, addr.ip().to_canonical()));
    let handshake = Box::new(Handshake {
        gateway,
        codec: negotiated.codec,
        version: negotiated.version,
        origin,
        source_ip,
    });
    ws.on_upgrade(move |socket| serve_socket(*handshake, socket))
}

/// The two-tab chat demo and the SDK it loads, built into the binary so `confab serve`
/// shows it with nothing else installed.
const DEMO_HTML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/js/demo/index.html"));
const DEMO_SDK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/js/dist/AV.realtime.js"));

/// `GET /demo/`: without `appId`, redirects to the page with the default app filled in
/// (the development app when it exists).
async fn demo_page(State(gateway): State<Gateway>, Query(q): Query<HashMap<String, String>>) -> Response {
    if !q.contains_key("appId") {
        let mut ids: Vec<&str> = gateway.engine.apps().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        let default = ids.iter().find(|id| **id == "confab-dev").or(ids.first()).copied().unwrap_or("");
        // Keep the other parameters (lang, name, room) the page reads.
        let mut query = format!("appId={}", percent_encode(default));
        for (k, v) in &q {
            query.push_str(&format!("&{}={}", percent_encode(k), percent_encode(v)));
        }
        return Redirect::to(&format!("/demo/?{query}")).into_response();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DEMO_HTML).into_response()
}

async fn demo_sdk() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], DEMO_SDK).into_response()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(trusted: &[&str]) -> GatewayConfig {
        let trusted = trusted.iter().map(|t| t.parse().expect("a network")).collect::<Vec<_>>();
        GatewayConfig {
            trusted_proxies: trusted.into(),
            listen: "10.1.1.1:7878".parse().expect("an address"),
            ..GatewayConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let forwarded = headers(&[
            ("host", "internal:7878"),
            ("x-forwarded-host", "chat.example.com"),
            ("x-forwarded-proto", "https"),
        ]);
        let proxy = Some("10.0.0.5".parse().expect("an address"));
        let stranger = Some("203.0.113.7".parse().expect("an address"));
        let g = gateway(&["10.0.0.0/8"]);
        assert_eq!(websocket_url(&g, &forwarded, proxy), "wss://chat.example.com/");
        assert_eq!(websocket_url(&g, &forwarded, stranger), "ws://internal:7878/");
        assert_eq!(websocket_url(&g, &forwarded, None), "ws://internal:7878/");
        assert_eq!(websocket_url(&gateway(&[]), &forwarded, proxy), "ws://internal:7878/");
        let chained =
            headers(&[("x-forwarded-host", "a.example, b.internal"), ("x-forwarded-proto", "https,http")]);
        assert_eq!(websocket_url(&g, &chained, proxy), "wss://a.example/");
    }

    #[test]
    fn the_client_address_is_read_past_trusted_proxies_only() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        let g = gateway(&["10.0.0.0/8"]);
        let proxy = ip("10.0.0.5");
        let xff = |v: &str| headers(&[("x-forwarded-for", v)]);
        // From a stranger the header is the client's own claim: ignored.
        assert_eq!(client_ip(&g, &xff("198.51.100.1"), ip("203.0.113.7")), ip("203.0.113.7"));
        // Through a trusted proxy: the address it received from.
        assert_eq!(client_ip(&g, &xff("198.51.100.1"), proxy), ip("198.51.100.1"));
        // A spoofed entry left of the real client is not believed; trusted hops are skipped.
        assert_eq!(client_ip(&g, &xff("1.2.3.4, 198.51.100.1, 10.0.0.9"), proxy), ip("198.51.100.1"));
        // Only trusted hops: the leftmost. No header, or garbage: the last trusted hop.
        assert_eq!(client_ip(&g, &xff("10.0.0.8, 10.0.0.9"), proxy), ip("10.0.0.8"));
        assert_eq!(client_ip(&g, &HeaderMap::new(), proxy), proxy);
        assert_eq!(client_ip(&g, &xff("unknown, 10.0.0.9"), proxy), ip("10.0.0.9"));
        // IPv6 with a port, and IPv4-mapped IPv6.
        assert_eq!(client_ip(&g, &xff("[2001:db8::1]:4711"), proxy), ip("2001:db8::1"));
        assert_eq!(client_ip(&g, &xff("::ffff:198.51.100.2"), proxy), ip("198.51.100.2"));
        assert_eq!(client_ip(&gateway(&[]), &xff("198.51.100.1"), proxy), proxy, "nobody trusted");
    }

    #[test]
    fn a_tls_port_hands_out_wss() {
        let g = GatewayConfig { tls: true, ..gateway(&["10.0.0.0/8"]) };
        let proxy = Some("10.0.0.5".parse().expect("an address"));
        let stranger = Some("203.0.113.7".parse().expect("an address"));
        let host = headers(&[("host", "chat.example.com:7878")]);
        assert_eq!(websocket_url(&g, &host, stranger), "wss://chat.example.com:7878/");
        assert_eq!(websocket_url(&g, &HeaderMap::new(), None), "wss://10.1.1.1:7878/");
        // A trusted proxy in front says what its client used; nobody else can.
        let plain = headers(&[("host", "internal:7878"), ("x-forwarded-proto", "http")]);
        assert_eq!(websocket_url(&g, &plain, proxy), "ws://internal:7878/");
        assert_eq!(websocket_url(&g, &plain, stranger), "wss://internal:7878/");
        // public_url wins over everything.
        let public = GatewayConfig { public_url: Some("https://chat.example.com/".into()), ..g };
        assert_eq!(websocket_url(&public, &host, None), "wss://chat.example.com/");
    }

    #[test]
    fn a_malformed_host_falls_back_to_the_listen_address() {
        let g = gateway(&["10.0.0.0/8"]);
        let proxy = Some("10.0.0.5".parse().expect("an address"));
        for bad in [
            "evil.example/path",
            "evil.example:80/x",
            "user@evil.example",
            "a b",
            "",
            "ws://x",
            "[::1",
            "[nope]:80",
            "h:99999",
            "h:",
        ] {
            assert_eq!(websocket_url(&g, &headers(&[("host", bad)]), None), "ws://10.1.1.1:7878/", "{bad:?}");
            let forwarded = headers(&[("x-forwarded-host", bad)]);
            assert_eq!(websocket_url(&g, &forwarded, proxy), "ws://10.1.1.1:7878/", "{bad:?}");
        }
        assert_eq!(websocket_url(&g, &HeaderMap::new(), None), "ws://10.1.1.1:7878/");
        for good in [
            "chat.example.com",
            "chat.example.com:443",
            "127.0.0.1:7878",
            "[::1]:7878",
            "[2001:db8::1]",
            "my_host",
        ] {
            assert_eq!(websocket_url(&g, &headers(&[("host", good)]), None), format!("ws://{good}/"));
        }
    }
}
