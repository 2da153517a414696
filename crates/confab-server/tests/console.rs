//! The admin console's server side against the real binary: its page and assets with
//! their security and caching headers, `GET /console/api/stats` (master key only, the
//! numbers of `/metrics`), and the REST extension it uses to show a client's devices,
//! `GET /1.2/rtm/clients/{id}/sessions`. The console itself runs in a browser in
//! compat/console/.
#![allow(clippy::unwrap_used)]

mod common;

use common::rest::{APP_KEY, MASTER, http};
use common::{APP, Server, Start, TEST_APP, create, is_direct, send};
use serde_json::{Value, json};

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> common::rest::Answer {
    http(server, "GET", path, headers, None).await
}

/// The raw body of a GET (the assets are not JSON).
async fn get_text(server: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.http.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn the_page_and_assets_carry_their_types_a_strict_csp_and_an_etag() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let redirect = get(&server, "/console", &[]).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/console/"));
    for (path, content_type, marker) in [
        ("/console/", "text/html; charset=utf-8", "<script src=\"console.js\" defer></script>"),
        ("/console/console.js", "text/javascript; charset=utf-8", "'use strict'"),
        ("/console/console.css", "text/css; charset=utf-8", ".charts"),
        ("/console/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let a = get(&server, path, &[]).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("content-type"), Some(content_type), "{path}");
        let csp = a.header("content-security-policy").unwrap();
        for directive in
            ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "form-action 'none'"]
        {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(a.header("cache-control"), Some("no-cache"));
        let etag = a.header("etag").unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        assert!(get_text(&server, path).await.contains(marker), "{path}");
        let again = get(&server, path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status, 304, "{path}: unchanged");
        let other = get(&server, path, &[("If-None-Match", "\"0000000000000000\"")]).await;
        assert_eq!(other.status, 200, "{path}: another version");
    }
}

#[tokio::test]
async fn stats_need_the_master_key_and_show_the_apps_sessions_and_the_nodes_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let path = "/console/api/stats";
    assert_eq!(get(&server, path, &[]).await.status, 401);
    let refused = get(&server, path, APP_KEY).await;
    refused.error(401, 401);
    let before = get(&server, path, MASTER).await.ok();
    assert_eq!(before["app"]["id"], APP);

    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    for n in 0..3 {
        send(&mut alice, &cid, &format!("m{n}")).await;
        bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    }
    let a = get(&server, path, MASTER).await;
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let after = a.ok();
    let moved = |k: &str| after["node"][k].as_u64().unwrap() - before["node"][k].as_u64().unwrap();
    assert_eq!(after["app"]["sessions"], 2, "{after}");
    assert_eq!(after["app"]["clients_online"], 2);
    assert!(after["node"]["sessions"].as_u64().unwrap() >= 2);
    assert!(after["node"]["connections"].as_u64().unwrap() >= 2);
    assert!(moved("messages_stored") >= 3 && moved("messages_delivered") >= 3, "{after}");
    assert!(after["time"].as_i64().unwrap() >= before["time"].as_i64().unwrap());
    for (name, bounds) in [("delivery_seconds", 15), ("commit_seconds", 13)] {
        let h = &after["node"][name];
        let le = h["le"].as_array().unwrap();
        let counts: Vec<u64> = h["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert_eq!((le.len(), counts.len()), (bounds, bounds + 1), "{name}: {h}");
        assert!(le.windows(2).all(|w| w[0].as_f64() < w[1].as_f64()), "{name}: increasing bounds");
        assert_eq!(counts.iter().sum::<u64>(), h["count"].as_u64().unwrap(), "{name}");
        let before_count = before["node"][name]["count"].as_u64().unwrap();
        assert!(h["count"].as_u64().unwrap() >= before_count + 3, "{name}: {h}");
    }
    // The same registry as /metrics.
    let metrics = get_text(&server, "/metrics").await;
    let stored = metrics.lines().find_map(|l| l.strip_prefix("confab_messages_stored_total ")).unwrap();
    assert!(stored.parse::<u64>().unwrap() >= after["node"]["messages_stored"].as_u64().unwrap());
}

#[tokio::test]
async fn a_clients_sessions_show_its_devices_until_it_is_kicked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let mut web = server.open("alice").await;
    let phone =
        confab_testkit::Client::open(&server.ws, APP, "alice", json!({"tag": "mobile"})).await.unwrap();
    let path = "/1.2/rtm/clients/alice/sessions";
    get(&server, path, APP_KEY).await.error(401, 401);
    let a = get(&server, path, MASTER).await.ok();
    assert_eq!(a["online"], true, "{a}");
    assert_eq!(a["count"], 2);
    let sessions = a["sessions"].as_array().unwrap();
    let tags: Vec<&Value> = sessions.iter().map(|s| &s["tag"]).collect();
    assert_eq!(tags, [&Value::Null, &json!("mobile")], "oldest login first: {a}");
    for s in sessions {
        assert_eq!((s["protocol"].as_str(), s["version"].as_str()), (Some("json"), Some("2")), "{s}");
        assert!(s["since"].as_i64().unwrap() > 1_600_000_000_000, "{s}");
    }
    let nobody = get(&server, "/1.2/rtm/clients/nobody/sessions", MASTER).await.ok();
    assert_eq!(nobody, json!({"online": false, "count": 0, "sessions": []}));

    let kick = http(&server, "POST", "/1.2/rtm/clients/alice/kick", MASTER, Some("{}")).await;
    assert_eq!(kick.status, 200, "{}", kick.body);
    let closed =
        web.wait_for("session closed", |f| f["cmd"] == "session" && f["op"] == "closed").await.unwrap();
    assert_eq!(closed["code"], 4115);
    let after = get(&server, path, MASTER).await.ok();
    assert_eq!(after, json!({"online": false, "count": 0, "sessions": []}));
    drop(phone);
}
