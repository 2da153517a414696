//! Conversation queries and member counts.

use super::*;

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
        bounds::check_depth(limits, &where_)?;
        if bounds::json_bytes(&where_) > limits.where_bytes {
            return Err(bounds::over_limit(
                ErrorCode::ConversationQueryFailed,
                "where_bytes",
                limits.where_bytes,
            ));
        }
        let query_failed = |e: QueryError| perr(ErrorCode::ConversationQueryFailed, e.to_string());
        let cond = parse_where(&where_, &QueryBounds::of(limits)).map_err(query_failed)?;
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
        let records =
            self.inner.store.scan_conversations(&app.config.id, filter).await.map_err(store_error)?;
        if records.len() > limits.query_scan_max {
            return Err(perr(
                ErrorCode::ConversationQueryFailed,
                format!("query examines more than {} conversations; narrow it", limits.query_scan_max),
            ));
        }
        // Evaluated on a blocking thread within a budget of steps: a costly query takes
        // no async worker from other clients, and stops at the same point however busy
        // the machine is.
        let keys = parse_sort(query.sort.as_deref().unwrap_or("-lm"));
        let (steps, app_state) = (limits.query_budget, app.clone());
        let evaluate = move || {
            let spent = || QueryError::Limit { key: "query_budget", max: steps };
            let mut budget = Budget::new(steps);
            let mut matched = Vec::new();
            for record in records {
                if (record.kind == ConvKind::Temporary) != temporary
                    || record.expires_at.is_some_and(|e| e <= now)
                {
                    continue;
                }
                budget.charge(1).ok_or_else(spent)?;
                let room = (record.kind == ConvKind::Transient)
                    .then(|| app_state.convs.get(&record.id).map(|c| c.room_clients()).unwrap_or_default());
                let mut doc = query_doc(&record, room);
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
                let hit = temporary || cond.matches_within(&doc, &mut budget).ok_or_else(spent)?;
                if hit {
                    matched.push((record, doc, visible));
                }
            }
            matched.sort_by(|a, b| compare_docs(&keys, &a.1, &b.1));
            Ok(matched)
        };
        let matched = tokio::task::spawn_blocking(evaluate)
            .await
            .map_err(|e| perr(ErrorCode::InternalError, format!("query evaluation failed: {e}")))?
            .map_err(query_failed)?;
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
            ConvKind::Transient => conv.room_clients().len(),
            _ => conv.state().members.len(),
        };
        Ok(Reply::ConvCount { count })
    }
}
