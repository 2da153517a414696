//! Conversation attribute updates, structure-aware: a sequence of updates (dotted keys
//! of many segments, nested values, reserved and empty keys) applied under small random
//! limits. Never a panic or a stack overflow; every accepted document is within the
//! limits and reads back from its JSON unchanged (a document the store could not parse
//! back would lose the conversation's attributes).
#![no_main]

use confab_engine::bounds::{MAX_JSON_DEPTH, json_bytes, shape, updated_attributes};
use confab_types::Limits;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Deepest value built here; the update's dotted key adds its segments on top.
const MAX_BUILD_DEPTH: usize = 140;

fn key_part(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => String::new(),
        1 => "m".to_owned(),
        2 => "attr".to_owned(),
        3 => "d".to_owned(),
        _ => u.arbitrary::<String>()?.chars().take(8).collect(),
    })
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    // Mostly short keys, sometimes thousands of segments.
    let segments = match u.int_in_range(0..=9u8)? {
        9 => u.int_in_range(1..=20_000usize)?,
        _ => u.int_in_range(1..=12usize)?,
    };
    let part = key_part(u)?;
    let mut key = part.clone();
    for _ in 1..segments {
        key.push('.');
        key.push_str(if u.ratio(1, 8)? { "" } else { &part });
    }
    Ok(key)
}

fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let kind = if depth >= MAX_BUILD_DEPTH { u.int_in_range(0..=3u8)? } else { u.int_in_range(0..=6u8)? };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::String(u.arbitrary::<String>()?.chars().take(64).collect()),
        4 => {
            let n = u.int_in_range(0..=4usize)?;
            Value::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4usize)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(key_part(u)?, value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}

/// Drops a value without recursing as deep as it is nested.
fn drop_flat(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let limits = Limits {
        json_depth: u.int_in_range(1..=MAX_JSON_DEPTH)?,
        attr_key_depth: u.int_in_range(1..=16usize)?,
        attr_bytes: u.int_in_range(0..=8192usize)?,
        attr_keys: u.int_in_range(0..=200usize)?,
        ..Limits::default()
    };
    let mut doc = Map::new();
    for _ in 0..u.int_in_range(1..=8u8)? {
        let mut update = Map::new();
        for _ in 0..u.int_in_range(0..=4u8)? {
            update.insert(key(u)?, value(u, 0)?);
        }
        if let Ok(next) = updated_attributes(&limits, &doc, &update) {
            let next = Value::Object(next);
            let (depth, keys) = shape(&next);
            assert!(depth <= limits.json_depth, "depth {depth} over {}", limits.json_depth);
            assert!(keys <= limits.attr_keys);
            let text = serde_json::to_string(&next).expect("serializes");
            assert_eq!(text.len(), json_bytes(&next));
            assert!(text.len() <= limits.attr_bytes);
            let back: Value = serde_json::from_str(&text).expect("an accepted document reads back");
            assert_eq!(back, next);
            doc = match next {
                Value::Object(m) => m,
                _ => unreachable!(),
            };
        }
        for (_, v) in update {
            drop_flat(v);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
