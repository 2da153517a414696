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

/// A query that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not a query this engine understands.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// Over one of the app's limits, named by its configuration key.
    #[error("query over the limit {key} = {max}")]
    Limit {
        /// The limit's key in `[apps.limits]`.
        key: &'static str,
        /// Its configured value.
        max: u64,
    },
}

fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Invalid(msg.into()))
}

/// What a `where` may hold: its regular expressions are the costly part to compile and
/// to run, so their number and length are bounded before any is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBounds {
    /// Most `$regex` conditions.
    pub regexes: usize,
    /// Longest `$regex` pattern, in characters.
    pub regex_chars: usize,
}

impl QueryBounds {
    /// The bounds of an app's limits.
    pub fn of(limits: &confab_types::Limits) -> QueryBounds {
        QueryBounds { regexes: limits.query_regexes, regex_chars: limits.regex_chars }
    }
}

impl Default for QueryBounds {
    fn default() -> Self {
        QueryBounds::of(&confab_types::Limits::default())
    }
}

/// Parses a `where` object within `bounds`.
pub fn parse_where(value: &Value, bounds: &QueryBounds) -> Result<Cond, QueryError> {
    let mut regexes = 0;
    parse_object(value, bounds, &mut regexes)
}

fn parse_object(value: &Value, bounds: &QueryBounds, regexes: &mut usize) -> Result<Cond, QueryError> {
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
                let parts =
                    items.iter().map(|i| parse_object(i, bounds, regexes)).collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" { Cond::And(parts) } else { Cond::Or(parts) });
            }
            k if k.starts_with('$') => return err(format!("unsupported operator {k}")),
            field => all.extend(parse_field(field, v, bounds, regexes)?),
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

fn parse_field(
    field: &str,
    v: &Value,
    bounds: &QueryBounds,
    regexes: &mut usize,
) -> Result<Vec<Cond>, QueryError> {
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
                *regexes += 1;
                if *regexes > bounds.regexes {
                    return Err(QueryError::Limit { key: "query_regexes", max: bounds.regexes as u64 });
                }
                if pattern.chars().count() > bounds.regex_chars {
                    return Err(QueryError::Limit { key: "regex_chars", max: bounds.regex_chars as u64 });
                }
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
        .map_err(|e| QueryError::Invalid(format!("bad regex: {e}")))
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

/// Evaluation steps a query has left. A step is about one condition tested on one
/// value; long strings under a regular expression and long lists cost more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(u64);

impl Budget {
    /// A budget of `steps`.
    pub fn new(steps: u64) -> Budget {
        Budget(steps)
    }

    /// Takes `steps`; `None` when they are not left (the budget is then spent).
    pub fn charge(&mut self, steps: u64) -> Option<()> {
        match self.0.checked_sub(steps) {
            Some(left) => {
                self.0 = left;
                Some(())
            }
            None => {
                self.0 = 0;
                None
            }
        }
    }
}

/// Bytes of text a regular expression scans per step.
const REGEX_BYTES_PER_STEP: u64 = 32;

fn regex_cost(s: &str) -> u64 {
    1 + s.len() as u64 / REGEX_BYTES_PER_STEP
}

impl Cond {
    /// Whether `doc` satisfies the condition, without a budget (trusted queries, tests).
    pub fn matches(&self, doc: &Map<String, Value>) -> bool {
        self.matches_within(doc, &mut Budget::new(u64::MAX)).unwrap_or(false)
    }

    /// Whether `doc` satisfies the condition; `None` once `budget` is spent.
    pub fn matches_within(&self, doc: &Map<String, Value>, budget: &mut Budget) -> Option<bool> {
        budget.charge(1)?;
        match self {
            Cond::And(parts) => {
                for part in parts {
                    if !part.matches_within(doc, budget)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Cond::Or(parts) => {
                for part in parts {
                    if part.matches_within(doc, budget)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Cond::Field(path, cond) => {
                let v = lookup(doc, path);
                let width = match v {
                    Some(Value::Array(items)) => items.len().max(1) as u64,
                    _ => 1,
                };
                Some(match cond {
                    FieldCond::Eq(w) => {
                        budget.charge(width)?;
                        matches_eq(v, w)
                    }
                    FieldCond::Ne(w) => {
                        budget.charge(width)?;
                        !matches_eq(v, w)
                    }
                    FieldCond::Cmp(dir, or_equal, w) => {
                        budget.charge(width)?;
                        let check = |x: &Value| {
                            compare(x, w).is_some_and(|o| o == *dir || (*or_equal && o == Ordering::Equal))
                        };
                        match v {
                            Some(Value::Array(items)) => items.iter().any(check),
                            Some(x) => check(x),
                            None => false,
                        }
                    }
                    FieldCond::In(ws) => {
                        budget.charge(width.saturating_mul(ws.len() as u64))?;
                        ws.iter().any(|w| matches_eq(v, w))
                    }
                    FieldCond::Nin(ws) => {
                        budget.charge(width.saturating_mul(ws.len() as u64))?;
                        !ws.iter().any(|w| matches_eq(v, w))
                    }
                    FieldCond::All(ws) => {
                        budget.charge(width.saturating_mul(ws.len() as u64))?;
                        match v {
                            Some(Value::Array(items)) => ws.iter().all(|w| items.iter().any(|i| equal(i, w))),
                            _ => false,
                        }
                    }
                    FieldCond::Exists(want) => v.is_some_and(|x| !x.is_null()) == *want,
                    FieldCond::Size(n) => {
                        matches!(v, Some(Value::Array(items)) if items.len() == *n)
                    }
                    FieldCond::Regex(re) => match v {
                        Some(Value::String(s)) => {
                            budget.charge(regex_cost(s))?;
                            re.is_match(s)
                        }
                        Some(Value::Array(items)) => {
                            let mut found = false;
                            for s in items.iter().filter_map(Value::as_str) {
                                budget.charge(regex_cost(s))?;
                                if re.is_match(s) {
                                    found = true;
                                    break;
                                }
                            }
                            found
                        }
                        _ => false,
                    },
                })
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
        match parse_where(&w, &QueryBounds::default()) {
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
        let b = QueryBounds::default();
        assert!(parse_where(&json!({"m": {"$near": 1}}), &b).is_err());
        assert!(parse_where(&json!({"$where": "1"}), &b).is_err());
        assert!(parse_where(&json!({"name": {"$regex": "("}}), &b).is_err());
        assert!(parse_where(&json!([1]), &b).is_err());
    }

    #[test]
    fn regexes_are_counted_and_measured_before_they_are_compiled() {
        let bounds = QueryBounds { regexes: 2, regex_chars: 5 };
        let re = |p: &str| json!({"name": {"$regex": p}});
        assert!(parse_where(&json!({"$or": [re("a"), re("b")]}), &bounds).is_ok());
        assert_eq!(
            parse_where(&json!({"$or": [re("a"), re("b"), re("c")]}), &bounds).expect_err("over the bounds"),
            QueryError::Limit { key: "query_regexes", max: 2 }
        );
        assert_eq!(
            parse_where(&re("abcdef"), &bounds).expect_err("over the bounds"),
            QueryError::Limit { key: "regex_chars", max: 5 }
        );
        // Characters, not bytes: five CJK characters are within five.
        assert!(parse_where(&re("会话名称啊"), &bounds).is_ok());
    }

    #[test]
    fn evaluation_stops_when_the_budget_is_spent() {
        let d = doc(json!({"name": "x".repeat(320), "m": ["a", "b", "c"]}));
        let c = q(json!({"$or": [{"name": {"$regex": "^y"}}, {"m": {"$in": ["d", "e"]}}]}));
        // The outer And 1, Or 1; And 1 + Field 1 + a regex over 320 bytes 11; And 1 +
        // Field 1 + 3 items × 2 values 6.
        let mut exact = Budget::new(23);
        assert_eq!(c.matches_within(&d, &mut exact), Some(false));
        assert_eq!(exact, Budget::new(0));
        let mut short = Budget::new(22);
        assert_eq!(c.matches_within(&d, &mut short), None);
        // A spent budget stays spent.
        assert_eq!(c.matches_within(&d, &mut short), None);
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
