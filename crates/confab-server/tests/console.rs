//! `GET /1.2/rtm/clients/{id}/sessions`, the REST extension the admin console uses to
//! show a client's devices, against the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use common::rest::{APP_KEY, MASTER, http};
use common::{APP, Server, Start, TEST_APP};
use serde_json::{Value, json};

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> common::rest::Answer {
    http(server, "GET", path, headers, None).await
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
