//! Stack maps by generation. A BPF stack map never forgets: a bucket stays taken until it is
//! deleted, and a different stack that hashes to a taken bucket is refused, so one map filled
//! over a long run refuses nearly every new stack. The kernel side writes into one of two maps
//! by the generation (`stack_epoch`) and tags each id with it; here a new generation begins at
//! every drain: the map of the generation before last is emptied, then the kernel is told to
//! write into it. A stack is read only while its generation is the current or the last one,
//! so an id never names a stack taken for another event: an older one is counted as expired.

use std::cell::Cell;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapMut};

use crate::abi::stack_id;

/// Entries of each generation's stack map by default: as much kernel memory as one map of
/// 8192 entries (about 1 KiB each), and far more stacks than one drain's worth.
pub const DEFAULT_STACK_STORAGE: u32 = 4096;

/// How long a generation lasts where off-CPU stacks are taken at the switch-out (kernels
/// without `sched_exit_tp`): a stack must outlive the wait it belongs to, so an off-CPU stack
/// stays readable for one to two of these; a longer wait's stack is counted as expired.
pub const SWITCH_OUT_GENERATION: Duration = Duration::from_secs(10);

/// The longest an off-CPU stack taken at the switch-out may be held before its event is sent:
/// half the time the generation number takes to come round again (its bits wrap after
/// [`stack_id::EPOCH_MASK`] + 1 generations of at least [`SWITCH_OUT_GENERATION`]), about
/// 22.7 hours. A longer wait goes out without its stacks, counted, never with an id that
/// could name a newer stack.
pub const MAX_STACK_HOLD: Duration =
    Duration::from_secs(SWITCH_OUT_GENERATION.as_secs() * (stack_id::EPOCH_MASK as u64 / 2));

/// The generation the kernel writes into now, and what became of stacks read too late.
#[derive(Debug)]
pub(crate) struct StackGenerations {
    epoch: u32,
    began: Instant,
    length: Duration,
    expired: Cell<u64>,
}

/// Where a stack id points: a bucket in the map of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackRef {
    pub bucket: u32,
    pub epoch: u32,
}

impl StackRef {
    /// Splits a kernel stack id; `None` for a negative one (no stack).
    pub fn of(id: i32) -> Option<StackRef> {
        let id = u32::try_from(id).ok()?;
        Some(StackRef {
            bucket: id & (stack_id::MAX_ENTRIES - 1),
            epoch: id >> stack_id::EPOCH_SHIFT,
        })
    }

    /// Whether its generation's map is the odd one.
    pub fn odd(self) -> bool {
        self.epoch & 1 == 1
    }
}

impl StackGenerations {
    /// Generation 0 (the kernel's starting value), lasting at least `length` (zero: one
    /// drain; `Duration::MAX`: for ever, where no program takes stacks).
    pub fn new(length: Duration) -> StackGenerations {
        StackGenerations {
            epoch: 0,
            began: Instant::now(),
            length,
            expired: Cell::new(0),
        }
    }

    /// Whether a stack of `r`'s generation may still be read: its map has not been emptied
    /// since.
    pub fn readable(&self, r: StackRef) -> bool {
        self.epoch.wrapping_sub(r.epoch) & stack_id::EPOCH_MASK <= 1
    }

    /// Counts an event whose stacks were read after their generation's map was emptied.
    pub fn count_expired(&self) {
        self.expired.set(self.expired.get() + 1);
    }

    /// Events whose stacks were read after their generation's map was emptied.
    pub fn expired(&self) -> u64 {
        self.expired.get()
    }

    /// The next generation when the current one has lasted long enough: its map (`even` or
    /// `odd`, by its parity) is emptied first and the new epoch returned for the kernel to use;
    /// `None` while the current one goes on.
    pub fn next(
        &mut self,
        now: Instant,
        even: &MapMut,
        odd: &MapMut,
    ) -> Result<Option<u32>, libbpf_rs::Error> {
        if now.duration_since(self.began) < self.length {
            return Ok(None);
        }
        let next = self.epoch.wrapping_add(1) & stack_id::EPOCH_MASK;
        empty(if next & 1 == 1 { odd } else { even })?;
        self.epoch = next;
        self.began = now;
        Ok(Some(next))
    }
}

/// Deletes every stack in `map`. The kernel walks its buckets for each next key; a key that
/// went between the walk and the delete is fine.
fn empty(map: &MapMut) -> Result<(), libbpf_rs::Error> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for key in keys {
        match map.delete(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The instruction pointers stored under `bucket` in `map`, innermost first.
pub(crate) fn read(map: &MapMut, bucket: u32) -> Option<Vec<u64>> {
    let bytes = map.lookup(&bucket.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(
        bytes
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .take_while(|&ip| ip != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_splits_into_bucket_and_generation() {
        let id: u32 = (5 << stack_id::EPOCH_SHIFT) | 1234;
        let r = StackRef::of(id as i32).unwrap();
        assert_eq!((r.bucket, r.epoch, r.odd()), (1234, 5, true));
        assert_eq!(StackRef::of(-17), None);
        assert!(!StackRef::of(7).unwrap().odd());
    }

    #[test]
    fn only_the_current_and_the_last_generation_are_readable() {
        let mut g = StackGenerations::new(Duration::ZERO);
        g.epoch = 7;
        let at = |epoch| StackRef { bucket: 0, epoch };
        assert!(g.readable(at(7)));
        assert!(g.readable(at(6)));
        assert!(!g.readable(at(5)));
        assert!(
            !g.readable(at(8)),
            "a generation not begun yet is not trusted either"
        );
    }

    #[test]
    fn generations_wrap_inside_the_id_bits() {
        let mut g = StackGenerations::new(Duration::ZERO);
        g.epoch = 0;
        let last = StackRef {
            bucket: 3,
            epoch: stack_id::EPOCH_MASK,
        };
        assert!(
            g.readable(last),
            "the generation before 0 is the mask's last"
        );
        // The largest id the kernel makes is still a positive i32.
        let top = (stack_id::EPOCH_MASK << stack_id::EPOCH_SHIFT) | (stack_id::MAX_ENTRIES - 1);
        assert!(i32::try_from(top).is_ok());
    }

    #[test]
    fn a_held_stack_goes_before_its_generation_number_comes_round() {
        // Generations last at least SWITCH_OUT_GENERATION; one taken in generation e could be
        // read as another's only once e + EPOCH_MASK + 1 has begun, at least EPOCH_MASK
        // whole generations later.
        let wrap = SWITCH_OUT_GENERATION * stack_id::EPOCH_MASK;
        assert!(MAX_STACK_HOLD * 2 <= wrap);
        assert!(
            MAX_STACK_HOLD > Duration::from_secs(20 * 3600),
            "{MAX_STACK_HOLD:?}"
        );
    }
}
