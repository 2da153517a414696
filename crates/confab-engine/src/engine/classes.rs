//! The storage API's view of the IM classes — `_Conversation`,
//! `_ConversationMemberInfo` and `_SysMessage` — as LeanCloud's storage returns and
//! exports their rows, for the class query (`GET /1.1/classes/{class}`) and scan
//! (`GET /1.1/scan/classes/{class}`) endpoints of the app's backend and for
//! `confab pull`. Confab keeps no such tables; the rows are built from conversations,
//! their members' roles and their inboxes:
//!
//! - `_Conversation`: every conversation but temporary ones (LeanCloud never stored
//!   those), as `Engine::conversation_json` shows it;
//! - `_ConversationMemberInfo`: the creator of a conversation who is still a member as
//!   `Owner`, each manager as `Manager` (members without a row are `Member`, as the
//!   SDKs assume); `objectId` is [`super::member_info_id`], as the REST API's
//!   `member-infos` show it;
//! - `_SysMessage`: subscribers' messages to service conversations (their inboxes).
//!
//! Scans walk conversations in id order with an opaque cursor and examine a bounded
//! number of them per call, so a page may hold fewer rows than asked for (LeanCloud's
//! scan pages may too) while the cursor says more follow. Queries without a narrowing
//! condition examine at most `query_scan_max` candidates, as conversation queries do.

use super::backend::member_info_id;
use super::*;
use crate::ports::StoredMessage;
use crate::query::Cond;
use base64::Engine as _;
use confab_types::time::iso8601;

/// Conversations one scan call looks at, at most.
const SCAN_EXAMINE: usize = 1000;
/// Conversations read from the store at a time.
const STORE_PAGE: usize = 100;

/// An IM class of the storage API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImClass {
    /// `_Conversation`.
    Conversation,
    /// `_ConversationMemberInfo`.
    MemberInfo,
    /// `_SysMessage`.
    SysMessage,
}

impl ImClass {
    /// The class of a storage class name, if it is one of these.
    pub fn from_name(name: &str) -> Option<ImClass> {
        match name {
            "_Conversation" => Some(ImClass::Conversation),
            "_ConversationMemberInfo" => Some(ImClass::MemberInfo),
            "_SysMessage" => Some(ImClass::SysMessage),
            _ => None,
        }
    }
}

/// A class query: LeanStorage's `where`, `order`, `skip`, `limit` and `count`.
#[derive(Debug, Clone, Default)]
pub struct ClassQuery {
    /// Conditions (`None`: every row).
    pub where_: Option<Value>,
    /// Sort keys (`-updatedAt,name`); `createdAt` by default.
    pub order: Option<String>,
    /// Rows to skip.
    pub skip: usize,
    /// Rows to return (the app's query limits apply).
    pub limit: Option<usize>,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// The rows.
    pub results: Vec<Value>,
    /// Where the next page starts; `None` at the end.
    pub cursor: Option<String>,
}

/// A row twice: the document queries match and sort on (dates as milliseconds), and
/// the row as returned (dates in LeanStorage form).
struct Row {
    doc: Map<String, Value>,
    out: Value,
}

fn dated(mut doc: Map<String, Value>, created: i64, updated: i64) -> Row {
    doc.insert("createdAt".into(), Value::from(created));
    doc.insert("updatedAt".into(), Value::from(updated));
    let mut out = doc.clone();
    out.insert("createdAt".into(), Value::from(iso8601(created)));
    out.insert("updatedAt".into(), Value::from(iso8601(updated)));
    Row { doc, out: Value::Object(out) }
}

/// A conversation's `_ConversationMemberInfo` rows, by client id.
fn member_info_rows(record: &ConversationRecord) -> Vec<(String, Row)> {
    let mut roles: Vec<(&str, &str)> = record.managers.iter().map(|m| (m.as_str(), "Manager")).collect();
    if !record.creator.is_empty() && record.members.contains(&record.creator) {
        roles.retain(|(m, _)| *m != record.creator);
        roles.push((&record.creator, "Owner"));
    }
    roles.sort();
    roles
        .into_iter()
        .map(|(client, role)| {
            let mut doc = Map::new();
            doc.insert("objectId".into(), Value::from(member_info_id(&record.id, client)));
            doc.insert("cid".into(), Value::from(record.id.as_str()));
            doc.insert("clientId".into(), Value::from(client));
            doc.insert("role".into(), Value::from(role));
            (client.to_owned(), dated(doc, record.created_at, record.updated_at))
        })
        .collect()
}

fn pointer(cid: &str) -> Value {
    serde_json::json!({"__type": "Pointer", "className": "_Conversation", "objectId": cid})
}

/// A subscriber's message to a service conversation as a `_SysMessage` row.
fn sys_message_row(cid: &str, m: &StoredMessage) -> Row {
    let mut doc = Map::new();
    doc.insert("objectId".into(), Value::from(m.id.as_str()));
    doc.insert("msgId".into(), Value::from(m.id.as_str()));
    doc.insert("conv".into(), pointer(cid));
    doc.insert("from".into(), Value::from(m.from.as_str()));
    doc.insert("data".into(), Value::from(m.data.as_str()));
    doc.insert("bin".into(), Value::from(m.binary));
    doc.insert("timestamp".into(), Value::from(m.ts));
    dated(doc, m.ts, m.patched_at.unwrap_or(m.ts))
}

fn inbox(cid: &str) -> String {
    format!("{cid}:inbox")
}

/// Cursors are opaque to callers: base64url of the position's parts.
fn encode_cursor(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(parts.join("\u{1f}"))
}

fn decode_cursor(cursor: &str) -> Result<Vec<String>, ProtocolError> {
    let bad = || perr(ErrorCode::ConversationQueryFailed, "invalid cursor");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    Ok(text.split('\u{1f}').map(str::to_owned).collect())
}

/// The value of `field` in a `where` when it is pinned to one string (directly, with
/// `$eq`, or as a pointer's `objectId`).
fn pinned<'w>(where_: Option<&'w Value>, field: &str) -> Option<&'w str> {
    let v = where_?.get(field)?;
    let v = v.get("$eq").unwrap_or(v);
    v.as_str().or_else(|| v.get("objectId").and_then(Value::as_str))
}

impl Engine {
    fn class_app(&self, app_id: &str) -> Result<Arc<AppState>, ProtocolError> {
        self.app(app_id).cloned().ok_or_else(|| perr(ErrorCode::AppNotAvailable, "unknown app"))
    }

    fn class_cond(app: &AppState, where_: Option<&Value>) -> Result<Option<Cond>, ProtocolError> {
        where_
            .filter(|w| w.as_object().is_some_and(|m| !m.is_empty()))
            .map(|w| super::queries::parse_checked(&app.config.limits, w))
            .transpose()
    }

    /// Whether `client` is a member of conversation `cid` (for a client's own request).
    pub async fn is_member(&self, app_id: &str, cid: &str, client: &str) -> Result<bool, ProtocolError> {
        let app = self.class_app(app_id)?;
        Ok(self.conv(&app, cid).await?.is_some_and(|c| c.kind != ConvKind::Transient && c.has_member(client)))
    }

    /// A class query: the matching rows after `skip`, at most `limit`, with how many
    /// matched in all.
    pub async fn class_query(
        &self,
        app_id: &str,
        class: ImClass,
        q: ClassQuery,
    ) -> Result<(Vec<Value>, usize), ProtocolError> {
        let app = self.class_app(app_id)?;
        let limits = &app.config.limits;
        let limit = q.limit.map_or(limits.query_default_limit, |l| l.min(limits.query_max_limit));
        let keys = parse_sort(q.order.as_deref().unwrap_or("createdAt"));
        let cond = Self::class_cond(&app, q.where_.as_ref())?;
        let mut rows: Vec<Row> = match class {
            ImClass::Conversation => {
                let filter = match &cond {
                    Some(c) => c.scan_filter(limits.query_scan_max),
                    None => ScanFilter { max: limits.query_scan_max, ..ScanFilter::default() },
                };
                let view = |r: &ConversationRecord, doc| (r.kind != ConvKind::Temporary).then_some((doc, ()));
                let matched = self.run_query(&app, filter, cond, keys.clone(), view).await?;
                matched
                    .into_iter()
                    .map(|(record, doc, ())| Row { out: result_json(&record, doc.clone(), true, false), doc })
                    .collect()
            }
            ImClass::MemberInfo | ImClass::SysMessage => {
                let candidates = self.class_candidates(&app, class, q.where_.as_ref()).await?;
                let mut budget = Budget::new(limits.query_budget);
                let spent = || perr(ErrorCode::ConversationQueryFailed, "over the limit query_budget");
                let mut matched = Vec::new();
                for row in candidates {
                    budget.charge(1).ok_or_else(spent)?;
                    let hit = match &cond {
                        Some(c) => c.matches_within(&row.doc, &mut budget).ok_or_else(spent)?,
                        None => true,
                    };
                    if hit {
                        matched.push(row);
                    }
                }
                matched
            }
        };
        rows.sort_by(|a, b| compare_docs(&keys, &a.doc, &b.doc));
        let count = rows.len();
        Ok((rows.into_iter().skip(q.skip).take(limit).map(|r| r.out).collect(), count))
    }

    /// Every member-info or `_SysMessage` row a query could match: those of the one
    /// conversation `cid` / `conv` pins, else those of every conversation, at most
    /// `query_scan_max` rows (more fail with 4310, as conversation queries do).
    async fn class_candidates(
        &self,
        app: &Arc<AppState>,
        class: ImClass,
        where_: Option<&Value>,
    ) -> Result<Vec<Row>, ProtocolError> {
        let max = app.config.limits.query_scan_max;
        let too_many = || {
            perr(
                ErrorCode::ConversationQueryFailed,
                format!("query examines more than {max} rows; narrow it"),
            )
        };
        let store = &self.inner.store;
        let id = &app.config.id;
        let (field, kind) = match class {
            ImClass::MemberInfo => ("cid", None),
            _ => ("conv", Some(ConvKind::System)),
        };
        let records = match pinned(where_, field) {
            Some(cid) => store.conversation(id, cid).await.map_err(store_error)?.into_iter().collect(),
            None => {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = store
                        .conversations_after(id, after.as_deref(), kind, STORE_PAGE)
                        .await
                        .map_err(store_error)?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id.clone());
                    all.extend(page);
                    if all.len() > max {
                        return Err(too_many());
                    }
                }
                all
            }
        };
        let mut rows = Vec::new();
        for record in records {
            match class {
                ImClass::MemberInfo => rows.extend(member_info_rows(&record).into_iter().map(|(_, r)| r)),
                _ if record.kind != ConvKind::System => {}
                _ => {
                    let range =
                        MessageRange { limit: max + 1 - rows.len().min(max), ..MessageRange::default() };
                    let messages =
                        store.messages(id, &inbox(&record.id), range).await.map_err(store_error)?;
                    rows.extend(messages.iter().map(|m| sys_message_row(&record.id, m)));
                }
            }
            if rows.len() > max {
                return Err(too_many());
            }
        }
        Ok(rows)
    }

    /// A scan page of `limit` rows at most, in `objectId` order for `_Conversation` and
    /// in conversation order for the others, after `cursor` (from the start with
    /// `None`), matching `where_`.
    pub async fn class_scan(
        &self,
        app_id: &str,
        class: ImClass,
        where_: Option<&Value>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, ProtocolError> {
        let app = self.class_app(app_id)?;
        let cond = Self::class_cond(&app, where_)?;
        let mut budget = Budget::new(app.config.limits.query_budget);
        let mut matches = |doc: &Map<String, Value>| -> Result<bool, ProtocolError> {
            let spent = || perr(ErrorCode::ConversationQueryFailed, "over the limit query_budget");
            budget.charge(1).ok_or_else(spent)?;
            match &cond {
                Some(c) => c.matches_within(doc, &mut budget).ok_or_else(spent),
                None => Ok(true),
            }
        };
        let (start, within) = match cursor.map(decode_cursor).transpose()? {
            None => (None, None),
            Some(parts) => {
                let mut parts = parts.into_iter();
                (parts.next(), parts.next())
            }
        };
        let store = &self.inner.store;
        let id = app.config.id.clone();
        let mut results = Vec::new();
        if limit == 0 {
            return Ok(ScanPage { results, cursor: cursor.map(str::to_owned) });
        }
        // The conversation the cursor stopped inside, finished first.
        let mut after = start.clone();
        if let (Some(cid), Some(within)) = (&start, &within)
            && let Some(record) = store.conversation(&id, cid).await.map_err(store_error)?
            && let Some(next) =
                self.scan_rows(&record, class, Some(within), limit, &mut results, &mut matches).await?
        {
            return Ok(ScanPage { results, cursor: Some(encode_cursor(&[cid, &next])) });
        }
        let kind = (class == ImClass::SysMessage).then_some(ConvKind::System);
        let mut examined = 0;
        loop {
            let page = store
                .conversations_after(&id, after.as_deref(), kind, STORE_PAGE)
                .await
                .map_err(store_error)?;
            if page.is_empty() {
                return Ok(ScanPage { results, cursor: None });
            }
            for record in page {
                examined += 1;
                after = Some(record.id.clone());
                if let Some(next) =
                    self.scan_rows(&record, class, None, limit, &mut results, &mut matches).await?
                {
                    return Ok(ScanPage { results, cursor: Some(encode_cursor(&[&record.id, &next])) });
                }
                if results.len() >= limit || examined >= SCAN_EXAMINE {
                    return Ok(ScanPage { results, cursor: Some(encode_cursor(&[&record.id])) });
                }
            }
        }
    }

    /// Adds one conversation's rows (after `within`, the last row returned from it) to
    /// `results` up to `limit`; returns where to resume inside it when it stopped there.
    async fn scan_rows(
        &self,
        record: &ConversationRecord,
        class: ImClass,
        within: Option<&str>,
        limit: usize,
        results: &mut Vec<Value>,
        matches: &mut impl FnMut(&Map<String, Value>) -> Result<bool, ProtocolError>,
    ) -> Result<Option<String>, ProtocolError> {
        match class {
            ImClass::Conversation => {
                if record.kind != ConvKind::Temporary && within.is_none() {
                    let doc = query_doc(record, None);
                    if matches(&doc)? {
                        results.push(result_json(record, doc, true, false));
                    }
                }
                Ok(None)
            }
            ImClass::MemberInfo => {
                let rows = member_info_rows(record);
                for (client, row) in rows.into_iter().filter(|(c, _)| within.is_none_or(|w| c.as_str() > w)) {
                    if results.len() >= limit {
                        return Ok(Some(results_stop(record, &client)));
                    }
                    if matches(&row.doc)? {
                        results.push(row.out);
                    }
                }
                Ok(None)
            }
            ImClass::SysMessage => {
                if record.kind != ConvKind::System {
                    return Ok(None);
                }
                let after = match within {
                    Some(w) => Some((
                        w.parse::<i64>()
                            .map_err(|_| perr(ErrorCode::ConversationQueryFailed, "invalid cursor"))?,
                        false,
                    )),
                    None => None,
                };
                let want = limit - results.len().min(limit);
                if want == 0 {
                    return Ok(Some(within.unwrap_or("0").to_owned()));
                }
                let range = MessageRange { after, limit: want + 1, ..MessageRange::default() };
                let store = &self.inner.store;
                let messages =
                    store.messages(&record.app, &inbox(&record.id), range).await.map_err(store_error)?;
                for (i, m) in messages.iter().enumerate() {
                    if i == want {
                        // More follow: resume after the last one taken.
                        return Ok(Some(messages[i - 1].ts.to_string()));
                    }
                    let row = sys_message_row(&record.id, m);
                    if matches(&row.doc)? {
                        results.push(row.out);
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Where a member-info scan resumes: before `client`, i.e. after the client ordered
/// just before it. Client ids order bytewise, so the resume point is the previous row.
fn results_stop(record: &ConversationRecord, client: &str) -> String {
    let rows = member_info_rows(record);
    rows.iter().map(|(c, _)| c.as_str()).filter(|c| *c < client).max().unwrap_or("").to_owned()
}
