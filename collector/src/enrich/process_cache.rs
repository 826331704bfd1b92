//! A bounded least-recently-used cache of process metadata by pid in front of `/proc`, which
//! keeps exited processes for a grace period and dead ones briefly.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::proc;
use super::process_info::ProcessInfo;

/// How long the minimal info of a process that was already gone stays cached, so that a burst
/// of events from a dead pid does not re-read `/proc` for each one.
pub const DEAD_PROCESS_TTL: Duration = Duration::from_secs(5);

/// Counters of a [`ProcessCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read `/proc` (including re-reads of expired dead processes).
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
}

struct CacheEntry {
    info: Arc<ProcessInfo>,
    /// Recency tick of the last use; the key of this entry in `ProcessCache::recency`.
    used: u64,
    /// For a process that was already gone when read: when to read it again.
    expires: Option<Instant>,
}

/// A bounded least-recently-used cache of [`ProcessInfo`] by pid, reading `/proc` on a miss.
///
/// Single-threaded: every method takes `&mut self`, and the owner (the enrich stage) is the only
/// caller; share the returned `Arc<ProcessInfo>`s, not the cache. Entries of live processes stay
/// until evicted or [`invalidated`](ProcessCache::invalidate), so the owner must invalidate a
/// pid on exec and exit. A process already gone when read is cached from the event's hint for
/// [`DEAD_PROCESS_TTL`].
pub struct ProcessCache {
    proc_root: PathBuf,
    capacity: usize,
    entries: HashMap<u32, CacheEntry>,
    /// Pids by recency tick, least recently used first.
    recency: BTreeMap<u64, u32>,
    tick: u64,
    stats: CacheStats,
}

impl ProcessCache {
    /// An empty cache reading from `proc_root` (`/proc` in production) and holding at most
    /// `capacity` processes (at least one).
    pub fn new(proc_root: PathBuf, capacity: usize) -> ProcessCache {
        let capacity = capacity.max(1);
        ProcessCache {
            proc_root,
            capacity,
            entries: HashMap::with_capacity(capacity.min(4096)),
            recency: BTreeMap::new(),
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    /// The info of `pid`, read from `/proc` on a miss. When the process is already gone, a
    /// minimal info named `comm_hint` (the name the event carried).
    pub fn get(&mut self, pid: u32, comm_hint: &str) -> Arc<ProcessInfo> {
        self.get_at(pid, comm_hint, Instant::now())
    }

    fn get_at(&mut self, pid: u32, comm_hint: &str, now: Instant) -> Arc<ProcessInfo> {
        if let Some(entry) = self.entries.get_mut(&pid) {
            if entry.expires.is_none_or(|expires| now < expires) {
                self.stats.hits += 1;
                self.recency.remove(&entry.used);
                self.tick += 1;
                entry.used = self.tick;
                self.recency.insert(self.tick, pid);
                return Arc::clone(&entry.info);
            }
            self.invalidate(pid);
        }
        self.stats.misses += 1;
        let facts = proc::read_process(&self.proc_root, pid);
        let expires = match facts {
            Some(_) => None,
            None => Some(now.checked_add(DEAD_PROCESS_TTL).unwrap_or(now)),
        };
        let info = Arc::new(ProcessInfo::from_facts(
            pid,
            facts.unwrap_or_default(),
            comm_hint,
        ));
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evictions += 1;
        }
        self.tick += 1;
        self.recency.insert(self.tick, pid);
        self.entries.insert(
            pid,
            CacheEntry {
                info: Arc::clone(&info),
                used: self.tick,
                expires,
            },
        );
        info
    }

    /// Forgets `pid`, so the next [`get`](ProcessCache::get) reads `/proc` again. Call on exec
    /// and exit.
    pub fn invalidate(&mut self, pid: u32) {
        if let Some(entry) = self.entries.remove(&pid) {
            self.recency.remove(&entry.used);
        }
    }

    /// `pid` exited: its entry stays usable for `keep` (its final spans and metrics still need
    /// its resource), then [`sweep`](ProcessCache::sweep) drops it.
    pub fn exited(&mut self, pid: u32, keep: Duration) {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(&pid) {
            let until = now.checked_add(keep).unwrap_or(now);
            entry.expires = Some(entry.expires.map_or(until, |e| e.min(until)));
        }
    }

    /// Drops every entry whose time is up (exited processes, and processes already gone when
    /// read), so the cache shrinks back once processes stop exiting. Returns how many went.
    pub fn sweep(&mut self) -> usize {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&mut self, now: Instant) -> usize {
        let expired: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|x| x <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &expired {
            self.invalidate(*pid);
        }
        expired.len()
    }

    /// Hit, miss and eviction counts since creation.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of cached processes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no process is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::proc::tests::FakeProc;

    #[test]
    fn cache_hits_misses_and_invalidation() {
        let fake = FakeProc::new("cache");
        fake.server(100);
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        let first = cache.get(100, "server");
        let second = cache.get(100, "server");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                evictions: 0
            }
        );

        // After an exec the process looks different; invalidation makes the cache re-read.
        fake.file(100, "comm", "other\n");
        assert_eq!(cache.get(100, "server").comm, "server");
        cache.invalidate(100);
        assert_eq!(cache.get(100, "server").comm, "other");
        assert_eq!(cache.stats().misses, 2);
        cache.invalidate(12345);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let fake = FakeProc::new("lru");
        for pid in 1..=4 {
            fake.file(pid, "comm", format!("p{pid}\n"));
        }
        let mut cache = ProcessCache::new(fake.root.clone(), 2);
        cache.get(1, "");
        cache.get(2, "");
        cache.get(1, ""); // 2 is now the least recently used
        cache.get(3, ""); // evicts 2
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.stats().evictions, 1);
        cache.get(1, "");
        assert_eq!(cache.stats().hits, 2);
        cache.get(2, ""); // a miss again; evicts 3
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 4,
                evictions: 2
            }
        );
        cache.get(1, "");
        assert_eq!(cache.stats().hits, 3);
        assert!(!cache.is_empty());
    }

    #[test]
    fn exited_processes_are_swept_after_their_grace() {
        let fake = FakeProc::new("sweep");
        for pid in 1..=3 {
            fake.file(pid, "comm", format!("p{pid}\n"));
        }
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        for pid in 1..=3 {
            cache.get(pid, "");
        }
        cache.get(99, "gone"); // never existed: cached from the hint for a while
        cache.exited(2, Duration::from_secs(3));
        cache.exited(3, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(cache.sweep_at(now), 1, "process 3 goes at once");
        assert_eq!(cache.get(2, "").comm, "p2", "still served within its grace");
        assert_eq!(cache.sweep_at(now + Duration::from_secs(4)), 1);
        assert_eq!(
            cache.sweep_at(now + DEAD_PROCESS_TTL * 2),
            1,
            "the dead one"
        );
        assert_eq!(cache.len(), 1, "only the live process 1 stays");
    }

    #[test]
    fn zero_capacity_still_holds_one() {
        let fake = FakeProc::new("tiny");
        fake.file(1, "comm", "a\n").file(2, "comm", "b\n");
        let mut cache = ProcessCache::new(fake.root.clone(), 0);
        cache.get(1, "");
        cache.get(1, "");
        cache.get(2, "");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                evictions: 1
            }
        );
    }

    #[test]
    fn dead_processes_are_cached_briefly_from_the_hint() {
        let fake = FakeProc::new("dead");
        let mut cache = ProcessCache::new(fake.root.clone(), 8);
        let t0 = Instant::now();
        let info = cache.get_at(77, "gone-worker", t0);
        assert_eq!(*info, ProcessInfo::minimal(77, "gone-worker"));
        assert_eq!(info.exe_name, "gone-worker");
        assert_eq!(info.service_name, "gone-worker");

        // Within the TTL the dead pid is not read again, even if the pid was reused.
        fake.server(77);
        let again = cache.get_at(77, "gone-worker", t0 + DEAD_PROCESS_TTL / 2);
        assert!(Arc::ptr_eq(&info, &again));
        assert_eq!(cache.stats().misses, 1);

        // After it, /proc is read again.
        let later = cache.get_at(77, "gone-worker", t0 + DEAD_PROCESS_TTL);
        assert_eq!(later.service_name, "checkout");
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                evictions: 0
            }
        );
        // A live entry does not expire.
        let much_later = cache.get_at(77, "", t0 + 100 * DEAD_PROCESS_TTL);
        assert!(Arc::ptr_eq(&later, &much_later));
    }
}
