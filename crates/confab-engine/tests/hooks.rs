//! The hook rules on the in-memory store with an in-process [`HookCaller`]: no socket.
#![allow(clippy::unwrap_used, missing_docs)]

use confab_engine::ports::{HookCaller, HookError, HookFuture, ManualClock, MessageRange, Store};
use confab_engine::{AppConfig, Engine, HookSettings, Next, Outbound, OutboundReceiver};
use confab_store_memory::MemoryStore;
use confab_types::{
    ConvStart, DirectRequest, ErrorCode, Inbound, ProtocolError, Reply, Request, SessionOpen,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APP: &str = "app";

/// How the fake backend answers a hook, from its name and parameters.
type Answer = Box<dyn Fn(&str, &Value) -> Result<Value, HookError> + Send + Sync>;

/// Answers each hook from a function of (hook, params); records every call.
struct Backend {
    answer: Answer,
    calls: Mutex<Vec<(String, Value, Option<String>)>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

impl HookCaller for Backend {
    fn call<'a>(
        &'a self,
        _: &'a AppConfig,
        hook: &'a str,
        params: &'a Value,
        key: Option<&'a str>,
    ) -> HookFuture<'a> {
        self.calls.lock().unwrap().push((hook.to_owned(), params.clone(), key.map(str::to_owned)));
        let answer = (self.answer)(hook, params);
        Box::pin(async move { answer })
    }
}

fn world(
    fail_closed: bool,
    answer: impl Fn(&str, &Value) -> Result<Value, HookError> + Send + Sync + 'static,
) -> (Engine, Arc<MemoryStore>, Arc<Backend>) {
    let mut app = AppConfig::new(APP, "key", "master");
    app.hooks = Some(HookSettings {
        url: "http://backend.test".into(),
        key: "h".into(),
        timeout_ms: 1000,
        fail_closed,
    });
    let store = Arc::new(MemoryStore::new());
    let backend = Arc::new(Backend { answer: Box::new(answer), calls: Mutex::new(Vec::new()) });
    let engine =
        Engine::with_hooks(vec![app], store.clone(), Arc::new(ManualClock::at(1_000)), backend.clone());
    (engine, store, backend)
}

async fn request(
    conn: &mut confab_engine::Connection,
    rx: &mut OutboundReceiver,
    serial: i32,
    peer: Option<&str>,
    request: Request,
) -> Result<Reply, ProtocolError> {
    assert!(conn.handle(Inbound { serial: Some(serial), peer_id: peer.map(str::to_owned), request }).await);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Next::Item(Outbound::Reply { serial: s, reply })) if s == Some(serial) => {
                return match *reply {
                    Reply::Error(e) => Err(e),
                    r => Ok(r),
                };
            }
            Ok(Next::Item(_)) => {}
            other => panic!("no reply: {other:?}"),
        }
    }
}

fn direct(cid: &str, msg: &str) -> Request {
    Request::Direct(DirectRequest { cid: cid.into(), msg: msg.into(), ..DirectRequest::default() })
}

#[tokio::test]
async fn message_received_drops_and_rewrites_and_sent_calls_go_through_the_outbox() {
    let (engine, store, backend) = world(false, |hook, params| match (hook, params["content"].as_str()) {
        ("_messageReceived", Some("bad")) => Ok(json!({"drop": true, "code": 7, "detail": "nope"})),
        ("_messageReceived", Some("rewrite")) => Ok(json!({"content": "rewritten"})),
        _ => Ok(json!({})),
    });
    let (mut conn, mut rx) = engine.open_connection(None, 3);
    let open = Request::SessionOpen(SessionOpen { app_id: APP.into(), ..SessionOpen::default() });
    request(&mut conn, &mut rx, 1, Some("alice"), open).await.unwrap();
    let start = ConvStart { members: vec!["bob".into()], ..ConvStart::default() };
    let Reply::ConvStarted { cid, .. } =
        request(&mut conn, &mut rx, 2, None, Request::ConvStart(start)).await.unwrap()
    else {
        panic!()
    };
    let refused = request(&mut conn, &mut rx, 3, None, direct(&cid, "bad")).await.unwrap_err();
    assert_eq!(
        (refused.code, refused.app_code, refused.app_msg.as_deref()),
        (ErrorCode::MessageRejectedByApp, Some(7), Some("nope"))
    );
    request(&mut conn, &mut rx, 4, None, direct(&cid, "rewrite")).await.unwrap();
    let stored =
        store.messages(APP, &cid, MessageRange { limit: 10, ..MessageRange::default() }).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| m.data.as_str()).collect::<Vec<_>>(),
        ["rewritten"],
        "the dropped one was never stored"
    );

    // The message's calls were stored with it; the worker delivers and clears them.
    let due = store.outbox_due(i64::MAX, 100).await.unwrap();
    let hooks: Vec<&str> = due.iter().map(|e| e.call.hook.as_str()).collect();
    assert!(hooks.contains(&"_messageSent") && hooks.contains(&"_receiversOffline"), "{hooks:?}");
    tokio::spawn(engine.clone().run_outbox());
    for _ in 0..200 {
        if store.outbox_due(i64::MAX, 100).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.outbox_due(i64::MAX, 100).await.unwrap().is_empty(), "delivered");
    let calls = backend.calls.lock().unwrap().clone();
    let sent = calls.iter().find(|(h, _, _)| h == "_messageSent").unwrap();
    assert_eq!(sent.1["content"], "rewritten");
    assert_eq!(sent.2.as_deref(), Some(format!("_messageSent:{cid}:{}", stored[0].id).as_str()));
    assert!(calls.iter().filter(|(h, _, _)| h == "_messageReceived").all(|(_, _, k)| k.is_none()));
}

#[tokio::test]
async fn a_failing_hook_fails_open_or_closed() {
    for fail_closed in [false, true] {
        let (engine, _store, _) = world(fail_closed, |hook, _| match hook {
            "_messageReceived" | "_conversationStart" => {
                Err(HookError::Status { status: 500, detail: "boom".into() })
            }
            _ => Ok(json!({})),
        });
        let (mut conn, mut rx) = engine.open_connection(None, 3);
        let open = Request::SessionOpen(SessionOpen { app_id: APP.into(), ..SessionOpen::default() });
        request(&mut conn, &mut rx, 1, Some("alice"), open).await.unwrap();
        let start = ConvStart { members: vec!["bob".into()], ..ConvStart::default() };
        let started = request(&mut conn, &mut rx, 2, None, Request::ConvStart(start)).await;
        if fail_closed {
            assert_eq!(started.unwrap_err().code, ErrorCode::ConversationRejectedByApp);
        } else {
            assert!(matches!(started, Ok(Reply::ConvStarted { .. })), "{started:?}");
        }
    }
}
