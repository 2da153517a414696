//! Sorting records by (group, timestamp, id) in bounded memory: records are kept in
//! memory up to a budget of bytes, and past it everything moves to a temporary SQLite
//! database that does the sorting on disk. Duplicates (the same id twice in a group)
//! are dropped and counted.

use rusqlite::{Connection, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::Path;

/// One record to sort.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Keyed<T> {
    /// Sorted first (a conversation id), then by `ts`, then by `id`.
    pub group: String,
    /// The record's timestamp.
    pub ts: i64,
    /// The record's id.
    pub id: String,
    /// The record.
    pub value: T,
}

/// A failure of the on-disk sort buffer.
#[derive(Debug, thiserror::Error)]
pub enum SortError {
    /// The temporary database failed.
    #[error("sort buffer: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The temporary directory could not be made.
    #[error("sort buffer directory: {0}")]
    Io(#[from] std::io::Error),
    /// A record did not round-trip through the buffer.
    #[error("sort buffer record: {0}")]
    Json(#[from] serde_json::Error),
}

/// Collects records, then hands them back sorted, a page at a time.
pub(crate) struct Sorter<T> {
    memory: Vec<Keyed<T>>,
    ids: HashSet<(String, String)>,
    bytes: usize,
    budget: usize,
    spill: Option<Spill>,
    work_dir: Option<std::path::PathBuf>,
    /// Records dropped because their id was already in their group.
    pub duplicates: u64,
}

struct Spill {
    conn: Connection,
    // Removed when the sorter is dropped.
    _dir: tempfile::TempDir,
}

/// Bytes a record is counted for besides its strings (the vector slot, the id set).
const OVERHEAD: usize = 96;

impl<T: Serialize + DeserializeOwned> Sorter<T> {
    /// A sorter holding at most about `budget` bytes in memory; the on-disk buffer goes
    /// in a temporary directory under `work_dir` (the system's by default).
    pub(crate) fn new(budget: usize, work_dir: Option<&Path>) -> Sorter<T> {
        Sorter {
            memory: Vec::new(),
            ids: HashSet::new(),
            bytes: 0,
            budget,
            spill: None,
            work_dir: work_dir.map(Path::to_owned),
            duplicates: 0,
        }
    }

    /// Adds a record; `size` is about how many bytes it holds. Returns false (and
    /// counts a duplicate) when its id is already in its group.
    pub(crate) fn push(&mut self, record: Keyed<T>, size: usize) -> Result<bool, SortError> {
        if let Some(spill) = &self.spill {
            let added = spill.insert(&record)?;
            if !added {
                self.duplicates += 1;
            }
            return Ok(added);
        }
        if !self.ids.insert((record.group.clone(), record.id.clone())) {
            self.duplicates += 1;
            return Ok(false);
        }
        self.bytes += size + record.group.len() * 2 + record.id.len() * 2 + OVERHEAD;
        self.memory.push(record);
        if self.bytes > self.budget {
            self.spill_to_disk()?;
        }
        Ok(true)
    }

    fn spill_to_disk(&mut self) -> Result<(), SortError> {
        let dir = match &self.work_dir {
            Some(d) => tempfile::Builder::new().prefix("confab-import-").tempdir_in(d)?,
            None => tempfile::Builder::new().prefix("confab-import-").tempdir()?,
        };
        let conn = Connection::open(dir.path().join("sort.db"))?;
        // A scratch file: nothing to recover after a crash.
        conn.pragma_update(None, "journal_mode", "OFF")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.execute_batch(
            "CREATE TABLE r (g TEXT NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL, v TEXT NOT NULL,
                PRIMARY KEY (g, ts, id)) WITHOUT ROWID;
             CREATE UNIQUE INDEX r_id ON r (g, id);
             BEGIN;",
        )?;
        let spill = Spill { conn, _dir: dir };
        for record in self.memory.drain(..) {
            spill.insert(&record)?;
        }
        self.ids = HashSet::new();
        self.bytes = 0;
        self.spill = Some(spill);
        Ok(())
    }

    /// Ends the collection: the records come back from [`Sorted::next_page`].
    pub(crate) fn finish(mut self) -> Result<Sorted<T>, SortError> {
        if let Some(spill) = &self.spill {
            spill.conn.execute_batch("COMMIT;")?;
        }
        self.memory.sort_by(|a, b| (&a.group, a.ts, &a.id).cmp(&(&b.group, b.ts, &b.id)));
        self.memory.reverse();
        Ok(Sorted { memory: self.memory, spill: self.spill, last: None, _t: PhantomData })
    }
}

impl Spill {
    fn insert<T: Serialize>(&self, r: &Keyed<T>) -> Result<bool, SortError> {
        let v = serde_json::to_string(&r.value)?;
        let n = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO r (g, ts, id, v) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![r.group, r.ts, r.id, v])?;
        Ok(n == 1)
    }
}

/// Sorted records, read a page at a time.
pub(crate) struct Sorted<T> {
    /// In reverse order, so the next record pops off the end.
    memory: Vec<Keyed<T>>,
    spill: Option<Spill>,
    last: Option<(String, i64, String)>,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Sorted<T> {
    /// Up to `n` next records in (group, ts, id) order; empty at the end.
    pub(crate) fn next_page(&mut self, n: usize) -> Result<Vec<Keyed<T>>, SortError> {
        let Some(spill) = &self.spill else {
            let take = n.min(self.memory.len());
            let mut page = self.memory.split_off(self.memory.len() - take);
            page.reverse();
            return Ok(page);
        };
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(String, i64, String, String)> {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        };
        let rows: Vec<(String, i64, String, String)> = match &self.last {
            None => spill
                .conn
                .prepare_cached("SELECT g, ts, id, v FROM r ORDER BY g, ts, id LIMIT ?1")?
                .query_map(params![limit], read)?
                .collect::<Result<_, _>>()?,
            Some((g, ts, id)) => spill
                .conn
                .prepare_cached(
                    "SELECT g, ts, id, v FROM r WHERE (g, ts, id) > (?1, ?2, ?3) ORDER BY g, ts, id LIMIT ?4",
                )?
                .query_map(params![g, ts, id, limit], read)?
                .collect::<Result<_, _>>()?,
        };
        if let Some((g, ts, id, _)) = rows.last() {
            self.last = Some((g.clone(), *ts, id.clone()));
        }
        rows.into_iter()
            .map(|(group, ts, id, v)| Ok(Keyed { group, ts, id, value: serde_json::from_str(&v)? }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(budget: usize) -> (Vec<(String, i64, String, u32)>, u64) {
        let mut s: Sorter<u32> = Sorter::new(budget, None);
        let input =
            [("b", 5, "x"), ("a", 9, "z"), ("a", 9, "y"), ("a", 1, "q"), ("b", 5, "x"), ("a", 2, "z")];
        for (i, (g, ts, id)) in input.iter().enumerate() {
            let k = Keyed { group: (*g).into(), ts: *ts, id: (*id).into(), value: i as u32 };
            s.push(k, 10).unwrap();
        }
        let dups = s.duplicates;
        let mut sorted = s.finish().unwrap();
        let mut out = Vec::new();
        loop {
            let page = sorted.next_page(2).unwrap();
            if page.is_empty() {
                break;
            }
            out.extend(page.into_iter().map(|k| (k.group, k.ts, k.id, k.value)));
        }
        (out, dups)
    }

    #[test]
    fn sorts_by_group_time_then_id_in_memory_and_on_disk() {
        let expected = vec![
            ("a".to_owned(), 1, "q".to_owned(), 3),
            ("a".into(), 9, "y".into(), 2),
            ("a".into(), 9, "z".into(), 1),
            ("b".into(), 5, "x".into(), 0),
        ];
        // Same id twice in a group: the second is a duplicate, whatever its timestamp.
        let (memory, dups) = run(1 << 20);
        assert_eq!((memory, dups), (expected.clone(), 2));
        let (disk, dups) = run(1);
        assert_eq!((disk, dups), (expected, 2));
    }
}
