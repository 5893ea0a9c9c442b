//! Hook registries near the bottom of mp-process: what runs in a child right
//! after `fork`, and what runs when a process finalizes its children at exit.
//!
//! A start method that keeps process-wide state (the fork server) registers
//! its hooks here when it creates that state, so the layers below the start
//! methods ([`identity`](crate::identity), the fork path) never name a start
//! method. Reading a registry takes no lock: a forked child runs the
//! after-fork hooks while another thread of its parent may have held any
//! lock at the fork. A hook registered twice runs twice, so a registrant
//! registers once (the fork server does it under a `Once`).

use std::sync::OnceLock;

/// Hooks per registry: a few registrants exist, all in this crate.
const SLOTS: usize = 8;

/// One registry: slots filled in order, read without a lock.
struct Hooks([OnceLock<fn()>; SLOTS]);

impl Hooks {
    const fn new() -> Hooks {
        Hooks([const { OnceLock::new() }; SLOTS])
    }

    /// Adds `f`; false when every slot is taken (a bug in this crate).
    fn add(&self, f: fn()) -> bool {
        self.0.iter().any(|slot| slot.set(f).is_ok())
    }

    fn run(&self) {
        for f in self.0.iter().map_while(OnceLock::get) {
            f();
        }
    }
}

static AFTER_FORK: Hooks = Hooks::new();
static AT_EXIT: Hooks = Hooks::new();

/// Registers `f` to run in every child right after `fork`.
pub(crate) fn after_fork(f: fn()) {
    let added = AFTER_FORK.add(f);
    debug_assert!(added, "more than {SLOTS} after-fork hooks");
}

/// Registers `f` to run when this process finalizes its children at exit.
pub(crate) fn at_exit(f: fn()) {
    let added = AT_EXIT.add(f);
    debug_assert!(added, "more than {SLOTS} at-exit hooks");
}

/// Runs the after-fork hooks, in the order they were registered.
pub(crate) fn run_after_fork() {
    AFTER_FORK.run();
}

/// Runs the at-exit hooks, in the order they were registered.
pub(crate) fn run_at_exit() {
    AT_EXIT.run();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RAN: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn hooks_run_in_order_and_a_full_registry_refuses() {
        let h = Hooks::new();
        h.add(|| {
            RAN.fetch_add(1, Ordering::SeqCst);
        });
        h.add(|| {
            RAN.fetch_add(10, Ordering::SeqCst);
        });
        h.run();
        assert_eq!(RAN.load(Ordering::SeqCst), 11);
        for _ in 2..SLOTS {
            assert!(h.add(|| {}));
        }
        assert!(!h.add(|| {}));
    }
}
