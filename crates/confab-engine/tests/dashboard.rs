//! The Grafana dashboard in `deploy/grafana/` queries only metrics that `/metrics` serves:
//! every `confab_…` name in a query is one the registry renders (a histogram's
//! `_bucket`/`_sum`/`_count` series count as the histogram), so renaming or dropping a
//! metric without fixing the dashboard fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use confab_engine::metrics::{Metrics, Snapshot};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DASHBOARD: &str = include_str!("../../../deploy/grafana/confab-dashboard.json");

/// Every `confab_…` identifier in a PromQL string.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = expr;
    while let Some(i) = rest.find("confab_") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_ident);
        let len = rest[i..].find(|c: char| !is_ident(c)).unwrap_or(rest.len() - i);
        if !preceded {
            out.insert(rest[i..i + len].to_string());
        }
        rest = &rest[i + len..];
    }
}

/// The queries of the dashboard: every panel target's `expr` and every template
/// variable's query, wherever they are nested.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The metric names and types the registry renders, from its `# TYPE` lines.
fn rendered() -> BTreeMap<String, String> {
    let text = Metrics::new().render(Snapshot::default());
    let mut types: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            (name.to_string(), kind.to_string())
        })
        .collect();
    // Resident memory is read from /proc and only rendered on Linux.
    if !cfg!(target_os = "linux") {
        types.insert("confab_process_resident_bytes".into(), "gauge".into());
    }
    types
}

#[test]
fn the_dashboard_queries_only_served_metrics() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");

    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let mut used = BTreeSet::new();
    exprs.iter().for_each(|e| metric_names(e, &mut used));
    assert!(used.len() >= 8, "the dashboard's queries were found: {used:?}");

    let served = rendered();
    assert!(served.contains_key("confab_commit_seconds"), "{served:?}");
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| served.get(*base).is_some_and(|kind| kind == "histogram"))
            .unwrap_or(name);
        assert!(served.contains_key(base), "the dashboard queries `{name}`, which /metrics does not serve");
    }
}

#[test]
fn every_panel_has_a_query_on_the_prometheus_input() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let title = &panel["title"];
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(target["expr"].as_str().is_some_and(|e| e.contains("confab_")), "{title}");
        }
    }
    let vars = dashboard["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter().any(
            |v| v["name"] == "instance" && v["definition"] == "label_values(confab_build_info, instance)"
        )
    );
}
