//! A hash map split into independently locked shards, so lookups on the per-message
//! path (sessions of a member, a conversation's state) never take one global lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// A sharded `HashMap<String, V>`.
#[derive(Debug)]
pub struct Sharded<V> {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<String, V>>]>,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl<V> Sharded<V> {
    /// Locks the shard that holds `key`.
    pub fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, V>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Total entries (takes every lock in turn; for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    /// Calls `f` with every value, one shard locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(&V)) {
        for shard in self.shards.iter() {
            for value in shard.lock().unwrap_or_else(|p| p.into_inner()).values() {
                f(value);
            }
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Clone> Sharded<V> {
    /// A clone of the value under `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.shard(key).get(key).cloned()
    }
}
