//! The shared region each primitive lives in, who the caller is, and how a
//! waiter spins before it sleeps.
//!
//! Every primitive owns one small memfd [`Region`]. It starts with the
//! workspace's shared-region [`Header`] (magic `mpS2`, the primitive's
//! [`Kind`], layout word 0), so a handle of one kind received where another
//! was expected is a clear error rather than a lock that reads a semaphore's
//! counter. The words after the header belong to the primitive: [`Shm::word`]
//! and [`Shm::dword`] index from the end of the header, and each module
//! documents its own layout.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use mp_sys::header::{self, Header, HeaderError};
use mp_sys::region::Region;
use serde::{Deserializer, Serializer};

use crate::error::SyncError;

/// The magic word of every primitive's region (`mpS1` had an 8-byte header).
const MAGIC: [u8; 4] = *b"mpS2";
/// Bytes asked for each region (the kernel rounds a memfd up to a page).
const LEN: usize = 64;
/// The primitives' words start here.
const BODY: usize = header::LEN;
/// The layout word: the primitives' words after the header.
const LAYOUT: u64 = 0;

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
        Header::new(MAGIC, kind as u32, LAYOUT)
            .write_to(&region)
            .map_err(|source| SyncError::Create {
                what: kind.name(),
                source,
            })?;
        Ok(Shm { region })
    }

    /// A region received from another process, checked to hold a `kind`.
    pub(crate) fn open(region: Region, kind: Kind) -> Result<Shm, SyncError> {
        let found = match Header::read_from(&region, MAGIC, LEN) {
            Err(e @ HeaderError::Short { .. }) => {
                format!("shared memory that is not a synchronization primitive ({e})")
            }
            Err(e) => format!("shared memory that is not a synchronization primitive of this version ({e})"),
            Ok(h) => match Kind::ALL.iter().find(|c| **c as u32 == h.kind) {
                Some(_) if h.layout != LAYOUT => format!("a primitive of another layout ({:#x})", h.layout),
                Some(&c) if c == kind => return Ok(Shm { region }),
                Some(c) => format!("a {}", c.name()),
                None => format!("a primitive of unknown kind {}", h.kind),
            },
        };
        Err(SyncError::WrongKind {
            expected: kind.name(),
            found,
        })
    }

    /// The primitive's `i`th 32-bit word (byte offset `BODY + 4 * i`). `i` is
    /// a constant of the primitive's layout, below `(LEN - BODY) / 4`, and
    /// every region is at least `LEN` bytes (checked by `create` and `open`).
    #[inline]
    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        &self.region.atomics_u32()[BODY / 4 + i]
    }

    /// The primitive's `i`th 64-bit word (byte offset `BODY + 8 * i`).
    #[inline]
    pub(crate) fn dword(&self, i: usize) -> &AtomicU64 {
        &self.region.atomics_u64()[BODY / 8 + i]
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
/// more on the VMs this was measured on; see docs/ARCHITECTURE.md, mechanism 5).
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
    mp_sys::time::Deadline::after(t).instant()
}

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    mp_sys::time::Deadline::from(deadline).has_passed()
}
