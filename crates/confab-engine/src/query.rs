//! Conversation queries (protocol §6.15): the Mongo-style `where` of LeanStorage parsed
//! into an AST, evaluated over conversation documents, plus `sort`.
//!
//! Evaluation happens here rather than in SQL so every store answers queries the same
//! way; stores only narrow the candidates ([`ScanFilter`]).

use crate::ports::{ConvKind, ScanFilter};
use confab_types::time::parse_iso8601;
use regex::Regex;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Fields whose values are dates: compared as epoch milliseconds.
const DATE_FIELDS: &[&str] = &["createdAt", "updatedAt", "lm"];

/// A parsed condition.
#[derive(Debug, Clone)]
pub enum Cond {
    /// All must hold.
    And(Vec<Cond>),
    /// One must hold.
    Or(Vec<Cond>),
    /// A condition on one (possibly dotted) field.
    Field(String, FieldCond),
}

/// A condition on one field's value.
#[derive(Debug, Clone)]
pub enum FieldCond {
    /// Equal (array fields: contains).
    Eq(Value),
    /// Not equal (array fields: does not contain).
    Ne(Value),
    /// Ordered comparison.
    Cmp(Ordering, bool, Value),
    /// One of.
    In(Vec<Value>),
    /// None of.
    Nin(Vec<Value>),
    /// Array contains all.
    All(Vec<Value>),
    /// Present or absent.
    Exists(bool),
    /// Array length.
    Size(usize),
    /// String matches.
    Regex(Regex),
}

/// A query that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(msg.into()))
}

/// Parses a `where` object.
pub fn parse_where(value: &Value) -> Result<Cond, QueryError> {
    let Value::Object(obj) = value else {
        return err("where must be an object");
    };
    let mut all = Vec::new();
    for (key, v) in obj {
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = v else {
                    return err(format!("{key} takes a list"));
                };
                let parts = items.iter().map(parse_where).collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" { Cond::And(parts) } else { Cond::Or(parts) });
            }
            k if k.starts_with('$') => return err(format!("unsupported operator {k}")),
            field => all.extend(parse_field(field, v)?),
        }
    }
    Ok(Cond::And(all))
}

fn is_operator_object(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')) && !is_date(v))
}

fn is_date(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.get("__type").and_then(Value::as_str) == Some("Date"))
}

fn parse_field(field: &str, v: &Value) -> Result<Vec<Cond>, QueryError> {
    let f = |c| Cond::Field(field.to_owned(), c);
    if !is_operator_object(v) {
        return Ok(vec![f(FieldCond::Eq(normalize(field, v)))]);
    }
    let Value::Object(ops) = v else {
        return Ok(vec![]);
    };
    let list = |op: &str, x: &Value| -> Result<Vec<Value>, QueryError> {
        match x {
            Value::Array(items) => Ok(items.iter().map(|i| normalize(field, i)).collect()),
            _ => err(format!("{op} takes a list")),
        }
    };
    let mut out = Vec::new();
    for (op, x) in ops {
        let cond = match op.as_str() {
            "$eq" => FieldCond::Eq(normalize(field, x)),
            "$ne" => FieldCond::Ne(normalize(field, x)),
            "$lt" => FieldCond::Cmp(Ordering::Less, false, normalize(field, x)),
            "$lte" => FieldCond::Cmp(Ordering::Less, true, normalize(field, x)),
            "$gt" => FieldCond::Cmp(Ordering::Greater, false, normalize(field, x)),
            "$gte" => FieldCond::Cmp(Ordering::Greater, true, normalize(field, x)),
            "$in" => FieldCond::In(list(op, x)?),
            "$nin" => FieldCond::Nin(list(op, x)?),
            "$all" => FieldCond::All(list(op, x)?),
            "$exists" => FieldCond::Exists(truthy(x)),
            "$size" => match x.as_u64() {
                Some(n) => FieldCond::Size(n as usize),
                None => return err("$size takes a non-negative integer"),
            },
            "$regex" => {
                let Some(pattern) = x.as_str() else {
                    return err("$regex takes a string");
                };
                let options = ops.get("$options").and_then(Value::as_str).unwrap_or("");
                FieldCond::Regex(compile_regex(pattern, options)?)
            }
            "$options" => continue,
            other => return err(format!("unsupported operator {other}")),
        };
        out.push(f(cond));
    }
    Ok(out)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

/// Turns Java-style `\Q…\E` literal blocks (which the SDKs emit) into escaped text,
/// since the `regex` crate does not know them, then compiles with the options.
pub fn compile_regex(pattern: &str, options: &str) -> Result<Regex, QueryError> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("\\Q") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let (literal, next) = match after.find("\\E") {
            Some(end) => (&after[..end], &after[end + 2..]),
            None => (after, ""),
        };
        out.push_str(&regex::escape(literal));
        rest = next;
    }
    out.push_str(rest);
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' | 'x' => flags.push(c),
            _ => return err(format!("unsupported regex option {c}")),
        }
    }
    let full = if flags.is_empty() { out } else { format!("(?{flags}){out}") };
    regex::RegexBuilder::new(&full)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| QueryError(format!("bad regex: {e}")))
}

/// Dates (`{"__type":"Date","iso":…}`, or ISO strings on date fields) become numbers.
fn normalize(field: &str, v: &Value) -> Value {
    if let Value::Object(m) = v
        && is_date(v)
        && let Some(ms) = m.get("iso").and_then(Value::as_str).and_then(parse_iso8601)
    {
        return Value::from(ms);
    }
    if DATE_FIELDS.contains(&field)
        && let Some(ms) = v.as_str().and_then(parse_iso8601)
    {
        return Value::from(ms);
    }
    v.clone()
}

fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Compares values of the same kind; `None` when they are not comparable.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b).map_or(a == b, |o| o == Ordering::Equal)
}

/// Equality the Mongo way: an array field equals a scalar it contains.
fn matches_eq(field: Option<&Value>, want: &Value) -> bool {
    match (field, want) {
        (None, Value::Null) => true,
        (None, _) => false,
        (Some(Value::Array(items)), w) if !w.is_array() => items.iter().any(|i| equal(i, w)),
        (Some(v), w) => equal(v, w),
    }
}

impl Cond {
    /// Whether `doc` satisfies the condition.
    pub fn matches(&self, doc: &Map<String, Value>) -> bool {
        match self {
            Cond::And(parts) => parts.iter().all(|c| c.matches(doc)),
            Cond::Or(parts) => parts.iter().any(|c| c.matches(doc)),
            Cond::Field(path, cond) => {
                let v = lookup(doc, path);
                match cond {
                    FieldCond::Eq(w) => matches_eq(v, w),
                    FieldCond::Ne(w) => !matches_eq(v, w),
                    FieldCond::Cmp(dir, or_equal, w) => {
                        let check = |x: &Value| {
                            compare(x, w).is_some_and(|o| o == *dir || (*or_equal && o == Ordering::Equal))
                        };
                        match v {
                            Some(Value::Array(items)) => items.iter().any(check),
                            Some(x) => check(x),
                            None => false,
                        }
                    }
                    FieldCond::In(ws) => ws.iter().any(|w| matches_eq(v, w)),
                    FieldCond::Nin(ws) => !ws.iter().any(|w| matches_eq(v, w)),
                    FieldCond::All(ws) => match v {
                        Some(Value::Array(items)) => ws.iter().all(|w| items.iter().any(|i| equal(i, w))),
                        _ => false,
                    },
                    FieldCond::Exists(want) => v.is_some_and(|x| !x.is_null()) == *want,
                    FieldCond::Size(n) => {
                        matches!(v, Some(Value::Array(items)) if items.len() == *n)
                    }
                    FieldCond::Regex(re) => match v {
                        Some(Value::String(s)) => re.is_match(s),
                        Some(Value::Array(items)) => {
                            items.iter().any(|i| i.as_str().is_some_and(|s| re.is_match(s)))
                        }
                        _ => false,
                    },
                }
            }
        }
    }

    /// What a store can use to narrow the scan: ids, a member, a kind.
    pub fn scan_filter(&self, max: usize) -> ScanFilter {
        let mut filter = ScanFilter { max, ..ScanFilter::default() };
        let Cond::And(parts) = self else {
            return filter;
        };
        for part in parts {
            let Cond::Field(path, cond) = part else {
                continue;
            };
            match (path.as_str(), cond) {
                ("objectId", FieldCond::Eq(Value::String(id))) => filter.ids = Some(vec![id.clone()]),
                ("objectId", FieldCond::In(ids)) => {
                    filter.ids = Some(ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                }
                ("m", FieldCond::Eq(Value::String(member))) => filter.member = Some(member.clone()),
                ("m", FieldCond::All(members)) => {
                    if let Some(Value::String(m)) = members.first() {
                        filter.member = Some(m.clone());
                    }
                }
                ("tr", FieldCond::Eq(Value::Bool(true))) => filter.kind = Some(ConvKind::Transient),
                _ => {}
            }
        }
        filter
    }
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Field path.
    pub field: String,
    /// Descending.
    pub descending: bool,
}

/// Parses `"-lm,name"`.
pub fn parse_sort(sort: &str) -> Vec<SortKey> {
    sort.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('-') {
            Some(f) => SortKey { field: f.to_owned(), descending: true },
            None => SortKey { field: s.trim_start_matches('+').to_owned(), descending: false },
        })
        .collect()
}

fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Number(_)) => 1,
        Some(Value::String(_)) => 2,
        Some(Value::Bool(_)) => 3,
        Some(_) => 4,
    }
}

/// Orders two documents by the sort keys; missing values sort lowest.
pub fn compare_docs(keys: &[SortKey], a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
    for key in keys {
        let (x, y) = (lookup(a, &key.field), lookup(b, &key.field));
        let o = match (x, y) {
            (Some(x), Some(y)) => {
                compare(x, y).unwrap_or_else(|| type_rank(Some(x)).cmp(&type_rank(Some(y))))
            }
            _ => type_rank(x).cmp(&type_rank(y)),
        };
        let o = if key.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn q(w: Value) -> Cond {
        match parse_where(&w) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn operators() {
        let d = doc(json!({
            "objectId": "c1", "m": ["alice", "bob"], "name": "Lunch Club", "tr": false,
            "attr": {"type": "private", "level": 3}, "createdAt": 1000, "lm": 5000
        }));
        let yes = [
            json!({"m": "alice"}),
            json!({"m": {"$all": ["bob", "alice"]}}),
            json!({"m": {"$size": 2}}),
            json!({"objectId": {"$in": ["c0", "c1"]}}),
            json!({"attr.type": "private"}),
            json!({"attr.level": {"$gte": 3, "$lt": 4}}),
            json!({"name": {"$regex": "^\\QLunch\\E", "$options": "i"}}),
            json!({"name": {"$regex": "club$", "$options": "i"}}),
            json!({"attr": {"$exists": true}, "missing": {"$exists": false}}),
            json!({"lm": {"$gt": {"__type": "Date", "iso": "1970-01-01T00:00:01.000Z"}}}),
            json!({"createdAt": {"$lte": "1970-01-01T00:00:01.000Z"}}),
            json!({"$or": [{"m": "zed"}, {"tr": false}]}),
            json!({"m": {"$nin": ["zed"]}, "name": {"$ne": "x"}}),
        ];
        for w in yes {
            assert!(q(w.clone()).matches(&d), "{w}");
        }
        let no = [
            json!({"m": "carol"}),
            json!({"m": {"$all": ["alice", "carol"]}}),
            json!({"m": {"$size": 3}}),
            json!({"name": {"$regex": "\\Q.*\\E"}}),
            json!({"attr.level": {"$gt": 3}}),
            json!({"$and": [{"m": "alice"}, {"tr": true}]}),
        ];
        for w in no {
            assert!(!q(w.clone()).matches(&d), "{w}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        assert!(parse_where(&json!({"m": {"$near": 1}})).is_err());
        assert!(parse_where(&json!({"$where": "1"})).is_err());
        assert!(parse_where(&json!({"name": {"$regex": "("}})).is_err());
        assert!(parse_where(&json!([1])).is_err());
    }

    #[test]
    fn scan_filter_and_sort() {
        let c = q(json!({"objectId": {"$in": ["a", "b"]}, "m": "alice", "tr": true}));
        let f = c.scan_filter(10);
        assert_eq!(f.ids, Some(vec!["a".into(), "b".into()]));
        assert_eq!(f.member.as_deref(), Some("alice"));
        assert_eq!(f.kind, Some(ConvKind::Transient));
        let keys = parse_sort("-lm,name");
        let mut docs = [
            doc(json!({"name": "b", "lm": 1})),
            doc(json!({"name": "a"})),
            doc(json!({"name": "c", "lm": 2})),
            doc(json!({"name": "a", "lm": 1})),
        ];
        docs.sort_by(|a, b| compare_docs(&keys, a, b));
        let names: Vec<&str> = docs.iter().filter_map(|d| d["name"].as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "a"]);
    }
}
