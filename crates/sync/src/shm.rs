//! The shared region each primitive lives in, who the caller is, and how a
//! waiter spins before it sleeps.
//!
//! Every primitive owns one small memfd [`Region`]. Its first two words are a
//! header (a magic number and the primitive's [`Kind`]), so a handle of one
//! kind received where another was expected is a clear error rather than a
//! lock that reads a semaphore's counter. The words after the header belong to
//! the primitive; each module documents its own layout.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use mp_sys::region::Region;
use serde::{Deserializer, Serializer};

use crate::error::SyncError;

/// `mpS1`: the first word of every primitive's region.
const MAGIC: u32 = u32::from_le_bytes(*b"mpS1");
/// Bytes asked for each region (the kernel rounds a memfd up to a page).
const LEN: usize = 64;

/// Which primitive a region holds: its second word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Lock = 1,
    RLock = 2,
    Semaphore = 3,
    BoundedSemaphore = 4,
    Event = 5,
    Condition = 6,
    Barrier = 7,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::BoundedSemaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Semaphore => "Semaphore",
            Kind::BoundedSemaphore => "BoundedSemaphore",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Barrier => "Barrier",
        }
    }
}

/// A primitive's shared memory: the header checked, the words reachable by
/// index.
#[derive(Debug)]
pub(crate) struct Shm {
    region: Region,
}

impl Shm {
    /// A new zeroed region holding a `kind`.
    pub(crate) fn create(kind: Kind) -> Result<Shm, SyncError> {
        let region = Region::create(kind.name(), LEN).map_err(|source| SyncError::Create {
            what: kind.name(),
            source,
        })?;
        let shm = Shm { region };
        shm.word(1).store(kind as u32, Ordering::Relaxed);
        shm.word(0).store(MAGIC, Ordering::Release);
        Ok(shm)
    }

    /// A region received from another process, checked to hold a `kind`.
    pub(crate) fn open(region: Region, kind: Kind) -> Result<Shm, SyncError> {
        let words = region.atomics_u32();
        let found = if words.len() < LEN / 4 || words[0].load(Ordering::Acquire) != MAGIC {
            "shared memory that is not a synchronization primitive".to_owned()
        } else {
            let k = words[1].load(Ordering::Relaxed);
            match Kind::ALL.iter().find(|c| **c as u32 == k) {
                Some(&c) if c == kind => return Ok(Shm { region }),
                Some(c) => format!("a {}", c.name()),
                None => format!("a primitive of unknown kind {k}"),
            }
        };
        Err(SyncError::WrongKind {
            expected: kind.name(),
            found,
        })
    }

    /// The `i`th 32-bit word (byte offset `4 * i`). `i` is a constant of the
    /// primitive's layout, below `LEN / 4`, and every region is at least `LEN`
    /// bytes (checked by `create` and `open`).
    #[inline]
    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        &self.region.atomics_u32()[i]
    }

    /// The `i`th 64-bit word (byte offset `8 * i`); index 0 is the header.
    #[inline]
    pub(crate) fn dword(&self, i: usize) -> &AtomicU64 {
        &self.region.atomics_u64()[i]
    }

    /// Whether two handles refer to the same shared memory.
    pub(crate) fn same(&self, other: &Shm) -> bool {
        self.region.same_memory(&other.region)
    }

    /// `Serialize` for a handle: the region's descriptor travels beside the
    /// bytes.
    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        mp_codec::handle::region::serialize(&self.region, s)
    }

    /// `Deserialize` for a handle of `kind`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D, kind: Kind) -> Result<Shm, D::Error> {
        let region = mp_codec::handle::region::deserialize(d)?;
        Shm::open(region, kind).map_err(mp_codec::handle::invalid)
    }
}

/// Implements `Serialize` and `Deserialize` for a handle type that is
/// `struct T { shm: Arc<Shm> }`.
macro_rules! handle_serde {
    ($t:ident) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.shm.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let shm = crate::shm::Shm::deserialize(d, crate::shm::Kind::$t)?;
                Ok($t {
                    shm: std::sync::Arc::new(shm),
                })
            }
        }
    };
}
pub(crate) use handle_serde;

/// The calling process's id: what a lock word holds while it is locked.
#[inline]
pub(crate) fn me() -> u32 {
    mp_sys::process::pid()
}

/// A number naming the calling thread, unique in its process: the owner of
/// an RLock beside the process id.
///
/// A forked child's only thread keeps its parent thread's number, and the
/// threads it starts later draw new ones from the counter it inherited, so
/// numbers stay unique within each process.
#[inline]
pub(crate) fn thread_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// How many times a waiter checks its condition, with a CPU pause between,
/// before it sleeps on the futex. `u32::MAX`: not decided yet.
static SPIN: AtomicU32 = AtomicU32::new(u32::MAX);

/// The spin limit when neither [`set_spin_limit`] nor `MP_SYNC_SPIN` says
/// otherwise. At 40 ns or so per pause, about 8 µs: longer than a cross-CPU
/// wake-up on a busy machine, far shorter than one from an idle CPU (35 µs and
/// more on the VMs this was measured on; see DESIGN.md, mechanism 5).
const DEFAULT_SPIN: u32 = 200;

/// Sets how many times a waiter re-checks before it sleeps (0: sleep at
/// once), for every primitive of this process. The default is 200 checks
/// (a few microseconds) when the process may run on more than one CPU and 0
/// when it is pinned to one (where spinning only delays the other side); the
/// environment variable `MP_SYNC_SPIN` sets it at start.
///
/// ```
/// mp_sync::set_spin_limit(0); // a machine where every CPU is busy
/// # mp_sync::set_spin_limit(200);
/// ```
pub fn set_spin_limit(checks: u32) {
    SPIN.store(checks.min(u32::MAX - 1), Ordering::Relaxed);
}

#[inline]
fn spin_limit() -> u32 {
    match SPIN.load(Ordering::Relaxed) {
        u32::MAX => default_spin(),
        n => n,
    }
}

#[cold]
fn default_spin() -> u32 {
    let n = std::env::var("MP_SYNC_SPIN")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            if cpus > 1 { DEFAULT_SPIN } else { 0 }
        });
    set_spin_limit(n);
    n.min(u32::MAX - 1)
}

/// Calls `ready` up to the spin limit, pausing between calls; true as soon as
/// it returns true.
#[inline]
pub(crate) fn spin(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..spin_limit() {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// A deadline `t` from now; `None` (wait forever) when it overflows.
pub(crate) fn deadline(t: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(t)
}

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}
