//! The Mongo-style `where` parser on arbitrary JSON: never a panic; a parsed condition
//! evaluates against a conversation document within a step budget (which it must never
//! overrun) and yields a scan filter.
#![no_main]

use confab_engine::query::{Budget, QueryBounds, parse_where};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(cond) = parse_where(&value, &QueryBounds::default()) {
        let doc = json!({
            "objectId": "5f2b7c1e9a0d3e4f5a6b7c8d", "name": "lobby", "m": ["alice", "bob"],
            "c": "alice", "tr": false, "lm": {"__type": "Date", "iso": "2025-01-01T00:00:00.000Z"},
            "attr": {"type": "private", "n": 3, "tags": ["a", "b"]}, "unique": false,
        });
        if let Value::Object(doc) = doc {
            let unbounded = cond.matches(&doc);
            // A budget that suffices gives the unbounded answer; a spent one gives none.
            let mut budget = Budget::new(1_000_000);
            if let Some(bounded) = cond.matches_within(&doc, &mut budget) {
                assert_eq!(bounded, unbounded);
            }
            let mut none = Budget::new(0);
            assert_eq!(cond.matches_within(&doc, &mut none), None);
        }
        let _ = cond.scan_filter(1000);
    }
});
