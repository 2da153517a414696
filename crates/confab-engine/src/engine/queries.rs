//! Conversation queries and member counts.

use super::*;
use crate::query::{Cond, SortKey};
use confab_types::Limits;

impl Engine {
    pub(super) async fn conv_query(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        query: ConvQuery,
    ) -> Result<Reply, ProtocolError> {
        let me = session.client_id.to_string();
        let limits = &app.config.limits;
        let where_ = match query.where_ {
            Some(Value::Object(m)) if !m.is_empty() => Value::Object(m),
            _ => serde_json::json!({ "m": me }),
        };
        let cond = parse_checked(limits, &where_)?;
        // Temporary conversations are found only by id, never by `where`.
        let temporary = !query.temporary_ids.is_empty();
        let filter = if temporary {
            ScanFilter {
                ids: Some(query.temporary_ids.clone()),
                kind: Some(ConvKind::Temporary),
                max: limits.query_scan_max,
                ..ScanFilter::default()
            }
        } else {
            cond.scan_filter(limits.query_scan_max)
        };
        let now = self.now();
        let keys = parse_sort(query.sort.as_deref().unwrap_or("-lm"));
        let view = move |record: &ConversationRecord, mut doc: Map<String, Value>| {
            if (record.kind == ConvKind::Temporary) != temporary
                || record.expires_at.is_some_and(|e| e <= now)
            {
                return None;
            }
            // A query sees what its caller may see: members only of its own conversations.
            let visible = match record.kind {
                ConvKind::Normal | ConvKind::Temporary => record.members.iter().any(|m| m == &me),
                _ => true,
            };
            if !visible {
                doc.remove("m");
                doc.remove("mu");
            }
            if let Some(expires) = record.expires_at {
                doc.insert("ttl".into(), Value::from((expires - now) / 1000));
            }
            Some((doc, visible))
        };
        let matched = self.run_query(app, filter, (!temporary).then_some(cond), keys, view).await?;
        let skip = query.skip.unwrap_or(0).max(0) as usize;
        let limit = match query.limit {
            Some(l) if l > 0 => (l as usize).min(limits.query_max_limit),
            _ => limits.query_default_limit,
        };
        let compact = query.flag & 1 != 0;
        let with_last = query.flag & 2 != 0;
        let results = matched
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|(record, doc, visible)| {
                result_json(&record, doc, visible && !compact, with_last && visible)
            })
            .collect();
        Ok(Reply::ConvResults { results })
    }

    /// Members of a conversation (chat rooms: distinct clients in the room now).
    pub(super) async fn conv_count(&self, app: &AppState, cid: &str) -> Result<Reply, ProtocolError> {
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        let count = match conv.kind {
            ConvKind::Transient => self.room_clients(app, &conv).await.len(),
            _ => conv.state().members.len(),
        };
        Ok(Reply::ConvCount { count })
    }

    /// Runs a parsed query: the store's candidates for `filter` (more than
    /// `query_scan_max` fail with 4310), each seen through `view` (its document as the
    /// caller may see it, plus a mark the caller keeps, or `None` to leave it out),
    /// matched by `cond` (`None` matches all) within the `query_budget`, sorted by `keys`.
    /// Evaluated on a blocking thread within a budget of steps: a costly query takes no
    /// async worker from other clients, and stops at the same point however busy the
    /// machine is.
    pub(super) async fn run_query<T: Send + 'static>(
        &self,
        app: &Arc<AppState>,
        filter: ScanFilter,
        cond: Option<Cond>,
        keys: Vec<SortKey>,
        view: impl Fn(&ConversationRecord, Map<String, Value>) -> Option<(Map<String, Value>, T)> + Send + 'static,
    ) -> Result<Vec<(ConversationRecord, Map<String, Value>, T)>, ProtocolError> {
        let limits = &app.config.limits;
        let records =
            self.inner.store.scan_conversations(&app.config.id, filter).await.map_err(store_error)?;
        if records.len() > limits.query_scan_max {
            return Err(perr(
                ErrorCode::ConversationQueryFailed,
                format!("query examines more than {} conversations; narrow it", limits.query_scan_max),
            ));
        }
        // Chat rooms' members are whoever is in them now, on any node.
        let mut rooms = std::collections::HashMap::new();
        for record in records.iter().filter(|r| r.kind == ConvKind::Transient) {
            if let Some(conv) = app.convs.get(&record.id) {
                rooms.insert(record.id.clone(), self.room_clients(app, &conv).await);
            }
        }
        let steps = limits.query_budget;
        let evaluate = move || {
            let spent = || QueryError::Limit { key: "query_budget", max: steps };
            let mut budget = Budget::new(steps);
            let mut matched = Vec::new();
            for record in records {
                let room = (record.kind == ConvKind::Transient)
                    .then(|| rooms.get(&record.id).cloned().unwrap_or_default());
                let Some((doc, mark)) = view(&record, query_doc(&record, room)) else { continue };
                budget.charge(1).ok_or_else(spent)?;
                let hit = match &cond {
                    Some(cond) => cond.matches_within(&doc, &mut budget).ok_or_else(spent)?,
                    None => true,
                };
                if hit {
                    matched.push((record, doc, mark));
                }
            }
            matched.sort_by(|a, b| compare_docs(&keys, &a.1, &b.1));
            Ok(matched)
        };
        tokio::task::spawn_blocking(evaluate)
            .await
            .map_err(|e| perr(ErrorCode::InternalError, format!("query evaluation failed: {e}")))?
            .map_err(|e: QueryError| perr(ErrorCode::ConversationQueryFailed, e.to_string()))
    }
}

/// Checks a `where` against the app's limits (depth, bytes, regular expressions) and
/// parses it.
pub(super) fn parse_checked(limits: &Limits, where_: &Value) -> Result<Cond, ProtocolError> {
    bounds::check_depth(limits, where_)?;
    if bounds::json_bytes(where_) > limits.where_bytes {
        return Err(bounds::over_limit(
            ErrorCode::ConversationQueryFailed,
            "where_bytes",
            limits.where_bytes,
        ));
    }
    parse_where(where_, &QueryBounds::of(limits))
        .map_err(|e| perr(ErrorCode::ConversationQueryFailed, e.to_string()))
}
