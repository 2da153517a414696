//! Bounds on what a request may carry, checked before the engine acts on it: JSON
//! nesting, attribute documents, re-send tokens, client ids and query size. Each
//! refusal names the limit's configuration key, so an operator can find and raise it;
//! nothing over a limit is stored, truncated or silently dropped.

use crate::conversation::apply_attributes;
use confab_types::{ErrorCode, Limits, ProtocolError};
use serde_json::{Map, Value};

/// The deepest `json_depth` a configuration may set: serde_json refuses to parse
/// deeper documents (its own recursion limit is 128), so a deeper stored attribute
/// document could not be read back.
pub const MAX_JSON_DEPTH: usize = 100;

/// The refusal of a request over the limit `key` (a key of `[apps.limits]`).
pub fn over_limit(code: ErrorCode, key: &str, max: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(code, format!("over the limit {key} = {max}"))
}

/// Nesting depth and number of object keys of a JSON value, walked without recursion
/// (a value built from dotted keys is not bounded by the parser's recursion limit). A
/// scalar has depth 0, `{}` and `[]` depth 1, `{"a": {"b": 1}}` depth 2.
pub fn shape(value: &Value) -> (usize, usize) {
    let (mut depth, mut keys) = (0, 0);
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                depth = depth.max(d + 1);
                keys += m.len();
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(items) => {
                depth = depth.max(d + 1);
                stack.extend(items.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    (depth, keys)
}

/// Bytes of a value's compact JSON, counted without building the string.
pub fn json_bytes(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a failure would only undercount an error path.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Refuses a JSON value of a request nested deeper than `json_depth`.
pub fn check_depth(limits: &Limits, value: &Value) -> Result<(), ProtocolError> {
    let max = limits.json_depth.min(MAX_JSON_DEPTH);
    if shape(value).0 > max {
        return Err(over_limit(ErrorCode::UnparseableRawMsg, "json_depth", max));
    }
    Ok(())
}

/// Applies an attribute update to `attrs` within the app's limits and returns the new
/// document; on any refusal `attrs` is returned untouched in the error's place, so
/// nothing is stored. Key depth is checked before the update is applied (a key of
/// 16,000 segments would build a value too deep to serialize or drop).
pub fn updated_attributes(
    limits: &Limits,
    attrs: &Map<String, Value>,
    update: &Map<String, Value>,
) -> Result<Map<String, Value>, ProtocolError> {
    let max_depth = limits.json_depth.min(MAX_JSON_DEPTH);
    for (key, value) in update {
        let segments = key.split('.').count();
        if segments > limits.attr_key_depth {
            return Err(over_limit(ErrorCode::UnparseableRawMsg, "attr_key_depth", limits.attr_key_depth));
        }
        if segments + shape(value).0 > max_depth {
            return Err(over_limit(ErrorCode::UnparseableRawMsg, "json_depth", max_depth));
        }
    }
    let mut next = attrs.clone();
    apply_attributes(&mut next, update)
        .map_err(|e| ProtocolError::new(ErrorCode::ConversationUpdateFailed, e))?;
    let doc = Value::Object(next);
    let (depth, keys) = shape(&doc);
    if depth > max_depth {
        return Err(over_limit(ErrorCode::UnparseableRawMsg, "json_depth", max_depth));
    }
    if keys > limits.attr_keys {
        return Err(over_limit(ErrorCode::UnparseableRawMsg, "attr_keys", limits.attr_keys));
    }
    if json_bytes(&doc) > limits.attr_bytes {
        return Err(over_limit(ErrorCode::UnparseableRawMsg, "attr_bytes", limits.attr_bytes));
    }
    match doc {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// Characters a client id may not contain: the signature strings join ids with `:`,
/// so an id with `:` could make one signed string read as another
/// (`alice` + `x:` = `alice:x`); whitespace, control and invisible formatting
/// characters (bidi overrides, zero-width spaces) make ids that look alike but differ.
fn forbidden_in_client_id(c: char) -> bool {
    c == ':' || c.is_whitespace() || c.is_control() || is_format_char(c)
}

/// Unicode's format characters (general category Cf), plus the noncharacters.
fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFDD0..=0xFDEF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xFFFE..=0xFFFF
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Checks a client id: 1 to `max_chars` characters, none of them forbidden (see
/// docs/decisions.md). Letters and digits of any script, `_ - . @ + #` and other
/// visible punctuation are fine, so LeanStorage objectIds, e-mail addresses and UUIDs
/// are valid ids. Returns what is wrong.
pub fn check_client_id(id: &str, max_chars: usize) -> Result<(), String> {
    let chars = id.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(format!("a client id has 1 to {max_chars} characters"));
    }
    if let Some(bad) = id.chars().find(|c| forbidden_in_client_id(*c)) {
        return Err(format!(
            "a client id may not contain U+{:04X} (':', whitespace, control or format characters)",
            bad as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn shape_counts_depth_and_keys_without_recursing() {
        assert_eq!(shape(&json!(1)), (0, 0));
        assert_eq!(shape(&json!({})), (1, 0));
        assert_eq!(shape(&json!({"a": {"b": [1, {"c": 2}]}, "d": 3})), (4, 4));
        // A value far deeper than the parser allows, as dotted keys could build one.
        let mut deep = json!(0);
        for _ in 0..5000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(shape(&deep).0, 5000);
        // Dropping a Value recurses: unwind it by hand.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn a_key_of_thousands_of_segments_is_refused_before_it_is_applied() {
        let limits = Limits::default();
        let key = format!("d{}", ".d".repeat(15_999));
        let update = map(json!({ key: 1 }));
        let err = updated_attributes(&limits, &Map::new(), &update).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnparseableRawMsg);
        assert!(err.detail.contains("attr_key_depth"), "{}", err.detail);
    }

    #[test]
    fn depth_keys_and_bytes_of_the_resulting_document_are_bounded() {
        let limits =
            Limits { json_depth: 4, attr_key_depth: 3, attr_keys: 5, attr_bytes: 60, ..Limits::default() };
        let ok = updated_attributes(&limits, &Map::new(), &map(json!({"a.b": {"c": 1}}))).unwrap();
        assert_eq!(Value::Object(ok.clone()), json!({"a": {"b": {"c": 1}}}));
        // A key of 3 segments holding a value of depth 2 makes a document of depth 5.
        let err = updated_attributes(&limits, &ok, &map(json!({"a.b.c": {"d": {}}}))).unwrap_err();
        assert!(err.detail.contains("json_depth"), "{}", err.detail);
        // Plain nesting in the value counts too.
        let err = updated_attributes(&limits, &ok, &map(json!({"x": [[[[1]]]]}))).unwrap_err();
        assert!(err.detail.contains("json_depth"), "{}", err.detail);
        let err = updated_attributes(&limits, &ok, &map(json!({"k1": 1, "k2": 2, "k3": 3}))).unwrap_err();
        assert!(err.detail.contains("attr_keys"), "{}", err.detail);
        let err = updated_attributes(&limits, &ok, &map(json!({"name": "x".repeat(60)}))).unwrap_err();
        assert!(err.detail.contains("attr_bytes"), "{}", err.detail);
        // Reserved keys keep their own code.
        let err = updated_attributes(&limits, &ok, &map(json!({"m": ["x"]}))).unwrap_err();
        assert_eq!(err.code, ErrorCode::ConversationUpdateFailed);
    }

    #[test]
    fn client_ids_real_apps_use_are_valid_and_ambiguous_ones_are_not() {
        for id in [
            "alice",
            "5f3a9c1e2b7d4a0012345678",
            "user@example.com",
            "first.last+tag@mail.example.cn",
            "123e4567-e89b-12d3-a456-426614174000",
            "用户_一号",
            "a_b-c.d#e",
        ] {
            assert!(check_client_id(id, 64).is_ok(), "{id}");
        }
        for id in [
            "",
            "alice:x",
            "ali ce",
            " alice",
            "a\nb",
            "a\u{0}b",
            "ali\u{202e}ecl",
            "zero\u{200b}width",
            "bom\u{feff}",
            "tab\tbed",
        ] {
            assert!(check_client_id(id, 64).is_err(), "{id:?}");
        }
        assert!(check_client_id(&"x".repeat(64), 64).is_ok());
        assert!(check_client_id(&"x".repeat(65), 64).is_err());
    }
}
