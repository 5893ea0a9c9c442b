//! Lock, RLock, Semaphore, Event, Condition and Barrier proxies: the
//! primitives live on the server, and a client that hangs up releases what
//! it held (Python's manager keeps such a lock locked forever).

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mp_sys::time::Deadline;

use crate::ManagerError;
use crate::client::{ObjRef, ServerRef, proxy_serde};
use crate::error::Fault;
use crate::server::{Block, Cx, lock};

macro_rules! plain_proxy {
    ($proxy:ident, $obj:ty, $what:literal) => {
        impl fmt::Debug for $proxy {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($what).field("id", &self.obj.id).finish()
            }
        }
        proxy_serde!($proxy, $obj, $what);
    };
}

/// Turns a wait's outcome into "acquired or not".
fn acquired<G>(r: Result<((), G), (Fault, G)>) -> Result<bool, Fault> {
    match r {
        Ok(_) => Ok(true),
        Err((Fault::Timeout, _)) => Ok(false),
        Err((f, _)) => Err(f),
    }
}

// ---------------------------------------------------------------- Lock

pub(crate) struct LockObj {
    holder: Mutex<Option<u64>>,
    cv: Condvar,
}

/// Python's `Manager().Lock()`: a lock on the server. Any process may
/// release it (as Python's `Lock`); a client that hangs up (its process
/// died) while holding it releases it.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let l = m.lock()?;
/// let g = l.acquire()?;
/// assert!(l.try_acquire()?.is_none());
/// drop(g);
/// assert!(l.try_acquire()?.is_some());
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct LockProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(LockProxy, LockObj, "LockProxy");

fn new_lock(_: ()) -> Result<LockObj, Fault> {
    Ok(LockObj {
        holder: Mutex::new(None),
        cv: Condvar::new(),
    })
}

fn lock_release_if(obj: &(dyn Any + Send + Sync), line: u64) {
    if let Some(l) = obj.downcast_ref::<LockObj>() {
        let mut h = lock(&l.holder);
        if *h == Some(line) {
            *h = None;
            l.cv.notify_one();
        }
    }
}

fn lock_acquire(l: &LockObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    let line = cx.line();
    let r = cx.wait(lock(&l.holder), &l.cv, block, |h| {
        h.is_none().then(|| {
            *h = Some(line);
        })
    });
    let got = acquired(r)?;
    if got {
        cx.on_hangup(lock_release_if);
    }
    Ok(got)
}

fn lock_release(l: &LockObj, _: (), _: &Cx) -> Result<(), Fault> {
    let mut h = lock(&l.holder);
    if h.take().is_none() {
        return Err(Fault::Invalid("release of an unlocked lock".into()));
    }
    drop(h);
    l.cv.notify_one();
    Ok(())
}

fn lock_locked(l: &LockObj, _: (), _: &Cx) -> Result<bool, Fault> {
    Ok(lock(&l.holder).is_some())
}

/// Holds a [`LockProxy`] (or an [`RLockProxy`] level); dropping it releases
/// (an error while releasing is ignored; call
/// [`release`](ProxyGuard::release) to see it).
#[must_use = "dropping the guard releases the lock"]
pub struct ProxyGuard {
    obj: ObjRef,
    release: fn(&ObjRef) -> Result<(), ManagerError>,
    armed: bool,
}

impl fmt::Debug for ProxyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGuard").field("id", &self.obj.id).finish()
    }
}

impl ProxyGuard {
    /// Releases now, reporting an error.
    pub fn release(mut self) -> Result<(), ManagerError> {
        self.armed = false;
        (self.release)(&self.obj)
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = (self.release)(&self.obj);
        }
    }
}

/// Runs `acquire` on the server; a guard that releases with `release` if
/// it took the lock.
fn guard_with<O, F>(
    obj: &ObjRef,
    acquire: F,
    release: fn(&ObjRef) -> Result<(), ManagerError>,
    block: Block,
) -> Result<Option<ProxyGuard>, ManagerError>
where
    O: Any + Send + Sync,
    F: Fn(&O, Block, &Cx) -> Result<bool, Fault> + Copy + Send + 'static,
{
    let got: bool = obj.call(acquire, &block)?;
    Ok(got.then(|| ProxyGuard {
        obj: obj.clone(),
        release,
        armed: true,
    }))
}

fn release_lock(obj: &ObjRef) -> Result<(), ManagerError> {
    obj.call(lock_release, &())
}

impl LockProxy {
    pub(crate) fn create(server: &Arc<ServerRef>) -> Result<Self, ManagerError> {
        Ok(LockProxy {
            obj: ObjRef::create(server, None, None, new_lock, &())?,
        })
    }

    fn acquire_with(&self, block: Block) -> Result<Option<ProxyGuard>, ManagerError> {
        guard_with(&self.obj, lock_acquire, release_lock, block)
    }

    /// Waits for the lock.
    pub fn acquire(&self) -> Result<ProxyGuard, ManagerError> {
        self.acquire_with(Block::Forever)?.ok_or(ManagerError::Timeout)
    }

    /// Waits at most `t` for the lock; `None` when it stayed taken.
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<ProxyGuard>, ManagerError> {
        self.acquire_with(Block::For(t))
    }

    /// Takes the lock if it is free now.
    pub fn try_acquire(&self) -> Result<Option<ProxyGuard>, ManagerError> {
        self.acquire_with(Block::No)
    }

    /// Releases the lock without a guard (Python's `release()`, after a
    /// guard was [`forget`](std::mem::forget)-ed or in another process).
    /// Releasing an unlocked lock is an error.
    pub fn release(&self) -> Result<(), ManagerError> {
        release_lock(&self.obj)
    }

    /// Whether someone holds the lock.
    pub fn is_locked(&self) -> Result<bool, ManagerError> {
        self.obj.call(lock_locked, &())
    }
}

// ---------------------------------------------------------------- RLock

/// A re-entrant hold, as RLock and Condition keep it: the line that holds
/// it and how many times.
#[derive(Default)]
struct Hold {
    owner: Option<u64>,
    count: usize,
}

impl Hold {
    /// Takes the hold for `line` (again, if it is `line`'s already).
    fn enter(&mut self, line: u64) -> Option<()> {
        match self.owner {
            None => {
                *self = Hold {
                    owner: Some(line),
                    count: 1,
                };
                Some(())
            }
            Some(o) if o == line => {
                self.count += 1;
                Some(())
            }
            Some(_) => None,
        }
    }

    /// Gives one level back; whether the hold is free now. `None` when
    /// `line` does not hold it.
    fn leave(&mut self, line: u64) -> Option<bool> {
        if self.owner != Some(line) {
            return None;
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
        }
        Some(self.owner.is_none())
    }

    /// Frees every level `line` holds (its client hung up, or it waits on
    /// a condition); how many there were.
    fn drop_all(&mut self, line: u64) -> usize {
        if self.owner != Some(line) {
            return 0;
        }
        std::mem::take(self).count
    }
}

pub(crate) struct RLockObj {
    st: Mutex<Hold>,
    cv: Condvar,
}

/// Python's `Manager().RLock()`: a re-entrant lock on the server, owned by
/// the thread (of the process) that acquired it. A client that hangs up
/// releases every level it held.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let r = m.rlock()?;
/// let a = r.acquire()?;
/// let b = r.acquire()?; // the same thread again
/// drop(b);
/// drop(a);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct RLockProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(RLockProxy, RLockObj, "RLockProxy");

fn new_rlock(_: ()) -> Result<RLockObj, Fault> {
    Ok(RLockObj {
        st: Mutex::new(Hold::default()),
        cv: Condvar::new(),
    })
}

fn rlock_release_if(obj: &(dyn Any + Send + Sync), line: u64) {
    if let Some(l) = obj.downcast_ref::<RLockObj>() {
        if lock(&l.st).drop_all(line) > 0 {
            l.cv.notify_one();
        }
    }
}

fn rlock_acquire(l: &RLockObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    let line = cx.line();
    let r = cx.wait(lock(&l.st), &l.cv, block, |st| st.enter(line));
    let got = acquired(r)?;
    if got {
        cx.on_hangup(rlock_release_if);
    }
    Ok(got)
}

fn rlock_release(l: &RLockObj, _: (), cx: &Cx) -> Result<(), Fault> {
    let freed = lock(&l.st).leave(cx.line()).ok_or_else(|| {
        Fault::Invalid(
            "release of an RLock this thread does not hold (an RLock is released by the thread that acquired it)"
                .into(),
        )
    })?;
    if freed {
        l.cv.notify_one();
    }
    Ok(())
}

fn release_rlock(obj: &ObjRef) -> Result<(), ManagerError> {
    obj.call(rlock_release, &())
}

impl RLockProxy {
    pub(crate) fn create(server: &Arc<ServerRef>) -> Result<Self, ManagerError> {
        Ok(RLockProxy {
            obj: ObjRef::create(server, None, None, new_rlock, &())?,
        })
    }

    fn acquire_with(&self, block: Block) -> Result<Option<ProxyGuard>, ManagerError> {
        guard_with(&self.obj, rlock_acquire, release_rlock, block)
    }

    /// Waits for the lock (at once when this thread holds it already).
    pub fn acquire(&self) -> Result<ProxyGuard, ManagerError> {
        self.acquire_with(Block::Forever)?.ok_or(ManagerError::Timeout)
    }

    /// Waits at most `t`; `None` when another thread kept it.
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<ProxyGuard>, ManagerError> {
        self.acquire_with(Block::For(t))
    }

    /// Takes the lock if it is free (or already this thread's) now.
    pub fn try_acquire(&self) -> Result<Option<ProxyGuard>, ManagerError> {
        self.acquire_with(Block::No)
    }

    /// Releases one level without a guard; an error when this thread does
    /// not hold the lock.
    pub fn release(&self) -> Result<(), ManagerError> {
        release_rlock(&self.obj)
    }
}

// ---------------------------------------------------------------- Semaphore

pub(crate) struct SemObj {
    value: Mutex<usize>,
    cv: Condvar,
    bound: Option<usize>,
}

/// Python's `Manager().Semaphore(n)` and `BoundedSemaphore(n)`: a counter
/// on the server.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let s = m.bounded_semaphore(1)?;
/// assert!(s.try_acquire()?);
/// assert!(!s.try_acquire()?);
/// s.release()?;
/// assert!(s.release().is_err()); // over the bound
/// assert_eq!(s.get_value()?, 1);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct SemaphoreProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(SemaphoreProxy, SemObj, "SemaphoreProxy");

fn new_sem((n, bounded): (usize, bool)) -> Result<SemObj, Fault> {
    Ok(SemObj {
        value: Mutex::new(n),
        cv: Condvar::new(),
        bound: bounded.then_some(n),
    })
}

fn sem_acquire(s: &SemObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    let r = cx.wait(lock(&s.value), &s.cv, block, |v| {
        (*v > 0).then(|| {
            *v -= 1;
        })
    });
    acquired(r)
}

fn sem_release(s: &SemObj, _: (), _: &Cx) -> Result<(), Fault> {
    let mut v = lock(&s.value);
    if let Some(b) = s.bound
        && *v >= b
    {
        return Err(Fault::Invalid(format!(
            "a bounded semaphore released more times than acquired (its bound is {b})"
        )));
    }
    *v += 1;
    drop(v);
    s.cv.notify_one();
    Ok(())
}

fn sem_value(s: &SemObj, _: (), _: &Cx) -> Result<usize, Fault> {
    Ok(*lock(&s.value))
}

impl SemaphoreProxy {
    pub(crate) fn create(server: &Arc<ServerRef>, n: usize, bounded: bool) -> Result<Self, ManagerError> {
        Ok(SemaphoreProxy {
            obj: ObjRef::create(server, None, None, new_sem, &(n, bounded))?,
        })
    }

    /// Waits until the counter is positive, then decrements it.
    pub fn acquire(&self) -> Result<(), ManagerError> {
        self.obj
            .call::<_, Block, bool, _, _>(sem_acquire, &Block::Forever)
            .map(drop)
    }

    /// As `acquire`, waiting at most `t`; whether it decremented.
    pub fn acquire_timeout(&self, t: Duration) -> Result<bool, ManagerError> {
        self.obj.call(sem_acquire, &Block::For(t))
    }

    /// Decrements if the counter is positive now.
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        self.obj.call(sem_acquire, &Block::No)
    }

    /// Increments the counter; over the bound of a bounded semaphore it is
    /// an error and the value is unchanged.
    pub fn release(&self) -> Result<(), ManagerError> {
        self.obj.call(sem_release, &())
    }

    /// The counter.
    pub fn get_value(&self) -> Result<usize, ManagerError> {
        self.obj.call(sem_value, &())
    }
}

// ---------------------------------------------------------------- Event

pub(crate) struct EventObj {
    flag: Mutex<bool>,
    cv: Condvar,
}

/// Python's `Manager().Event()`: a flag on the server.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let e = m.event()?;
/// assert!(!e.wait_timeout(std::time::Duration::from_millis(10))?);
/// e.set()?;
/// assert!(e.is_set()?);
/// e.wait()?;
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct EventProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(EventProxy, EventObj, "EventProxy");

fn new_event(_: ()) -> Result<EventObj, Fault> {
    Ok(EventObj {
        flag: Mutex::new(false),
        cv: Condvar::new(),
    })
}

fn event_set(e: &EventObj, on: bool, _: &Cx) -> Result<(), Fault> {
    *lock(&e.flag) = on;
    if on {
        e.cv.notify_all();
    }
    Ok(())
}

fn event_is_set(e: &EventObj, _: (), _: &Cx) -> Result<bool, Fault> {
    Ok(*lock(&e.flag))
}

fn event_wait(e: &EventObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    acquired(cx.wait(lock(&e.flag), &e.cv, block, |f| f.then_some(())))
}

impl EventProxy {
    pub(crate) fn create(server: &Arc<ServerRef>) -> Result<Self, ManagerError> {
        Ok(EventProxy {
            obj: ObjRef::create(server, None, None, new_event, &())?,
        })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), ManagerError> {
        self.obj.call(event_set, &true)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(event_set, &false)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        self.obj.call(event_is_set, &())
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.obj
            .call::<_, Block, bool, _, _>(event_wait, &Block::Forever)
            .map(drop)
    }

    /// Waits at most `t`; whether the flag is set.
    pub fn wait_timeout(&self, t: Duration) -> Result<bool, ManagerError> {
        self.obj.call(event_wait, &Block::For(t))
    }
}

// ---------------------------------------------------------------- Condition

pub(crate) struct CondObj {
    st: Mutex<CondState>,
    cv: Condvar,
}

struct CondState {
    hold: Hold,
    next_ticket: u64,
    waiting: VecDeque<u64>,
    notified: HashSet<u64>,
}

/// Python's `Manager().Condition()`: a condition variable on the server,
/// with its own re-entrant lock.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let c = m.condition()?;
/// let mut g = c.acquire()?;
/// assert!(!c.wait_timeout(&mut g, std::time::Duration::from_millis(10))?); // nobody notifies
/// c.notify_all()?;
/// drop(g);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct ConditionProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(ConditionProxy, CondObj, "ConditionProxy");

fn new_cond(_: ()) -> Result<CondObj, Fault> {
    Ok(CondObj {
        st: Mutex::new(CondState {
            hold: Hold::default(),
            next_ticket: 0,
            waiting: VecDeque::new(),
            notified: HashSet::new(),
        }),
        cv: Condvar::new(),
    })
}

fn cond_release_if(obj: &(dyn Any + Send + Sync), line: u64) {
    if let Some(c) = obj.downcast_ref::<CondObj>() {
        if lock(&c.st).hold.drop_all(line) > 0 {
            c.cv.notify_all();
        }
    }
}

fn cond_acquire(c: &CondObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    let line = cx.line();
    let r = cx.wait(lock(&c.st), &c.cv, block, |st| st.hold.enter(line));
    let got = acquired(r)?;
    if got {
        cx.on_hangup(cond_release_if);
    }
    Ok(got)
}

fn not_owner(what: &str) -> Fault {
    Fault::Invalid(format!("{what} on a condition this thread has not acquired"))
}

fn cond_release(c: &CondObj, _: (), cx: &Cx) -> Result<(), Fault> {
    if lock(&c.st).hold.leave(cx.line()).ok_or_else(|| not_owner("release"))? {
        c.cv.notify_all();
    }
    Ok(())
}

fn cond_wait(c: &CondObj, block: Block, cx: &Cx) -> Result<bool, Fault> {
    let line = cx.line();
    let mut st = lock(&c.st);
    let saved = st.hold.drop_all(line);
    if saved == 0 {
        return Err(not_owner("wait"));
    }
    let ticket = st.next_ticket;
    st.next_ticket += 1;
    st.waiting.push_back(ticket);
    c.cv.notify_all();
    let r = cx.wait(st, &c.cv, block, |s| s.notified.remove(&ticket).then_some(()));
    let (notified, st) = match r {
        Ok(((), st)) => (true, st),
        Err((Fault::Timeout, mut st)) => {
            st.waiting.retain(|t| *t != ticket);
            (false, st)
        }
        Err((f, mut st)) => {
            st.waiting.retain(|t| *t != ticket);
            st.notified.remove(&ticket);
            return Err(f);
        }
    };
    // Take the lock back, however long that takes.
    let r = cx.wait(st, &c.cv, Block::Forever, |s| {
        s.hold.owner.is_none().then(|| {
            s.hold = Hold {
                owner: Some(line),
                count: saved,
            };
        })
    });
    match r {
        Ok(_) => Ok(notified),
        Err((f, _)) => Err(f),
    }
}

fn cond_notify(c: &CondObj, n: usize, cx: &Cx) -> Result<(), Fault> {
    let mut st = lock(&c.st);
    if st.hold.owner != Some(cx.line()) {
        return Err(not_owner("notify"));
    }
    for _ in 0..n {
        match st.waiting.pop_front() {
            Some(t) => {
                st.notified.insert(t);
            }
            None => break,
        }
    }
    drop(st);
    c.cv.notify_all();
    Ok(())
}

fn release_cond(obj: &ObjRef) -> Result<(), ManagerError> {
    obj.call(cond_release, &())
}

impl ConditionProxy {
    pub(crate) fn create(server: &Arc<ServerRef>) -> Result<Self, ManagerError> {
        Ok(ConditionProxy {
            obj: ObjRef::create(server, None, None, new_cond, &())?,
        })
    }

    fn acquire_with(&self, block: Block) -> Result<Option<ProxyGuard>, ManagerError> {
        guard_with(&self.obj, cond_acquire, release_cond, block)
    }

    /// Acquires the condition's lock.
    pub fn acquire(&self) -> Result<ProxyGuard, ManagerError> {
        self.acquire_with(Block::Forever)?.ok_or(ManagerError::Timeout)
    }

    /// Acquires the lock, waiting at most `t`.
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<ProxyGuard>, ManagerError> {
        self.acquire_with(Block::For(t))
    }

    /// Releases the lock, waits for a notification, and takes the lock back.
    pub fn wait(&self, guard: &mut ProxyGuard) -> Result<(), ManagerError> {
        let _ = guard;
        self.obj
            .call::<_, Block, bool, _, _>(cond_wait, &Block::Forever)
            .map(drop)
    }

    /// As [`wait`](Self::wait), for at most `t`; whether it was notified.
    pub fn wait_timeout(&self, guard: &mut ProxyGuard, t: Duration) -> Result<bool, ManagerError> {
        let _ = guard;
        self.obj.call(cond_wait, &Block::For(t))
    }

    /// Waits until `pred` is true (checked with the lock held), at most
    /// `timeout` in all; the last value of `pred`.
    pub fn wait_for(
        &self,
        guard: &mut ProxyGuard,
        mut pred: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ManagerError> {
        let deadline = Deadline::from_timeout(timeout);
        loop {
            if pred() {
                return Ok(true);
            }
            match deadline.remaining() {
                None => self.wait(guard)?,
                Some(left) if left.is_zero() => return Ok(pred()),
                Some(left) => {
                    self.wait_timeout(guard, left)?;
                }
            }
        }
    }

    /// Wakes up to `n` waiters (the lock must be held).
    pub fn notify(&self, n: usize) -> Result<(), ManagerError> {
        self.obj.call(cond_notify, &n)
    }

    /// Wakes every waiter (the lock must be held).
    pub fn notify_all(&self) -> Result<(), ManagerError> {
        self.notify(usize::MAX)
    }
}

// ---------------------------------------------------------------- Barrier

pub(crate) struct BarrierObj {
    st: Mutex<BState>,
    cv: Condvar,
    parties: usize,
}

struct BState {
    count: usize,
    generation: u64,
    broken: bool,
    /// The last round ended by `reset` while callers waited.
    reset_round: Option<u64>,
}

/// Python's `Manager().Barrier(parties)`: a barrier on the server. A
/// waiter that times out, or whose client hangs up, breaks it (its other
/// waiters get [`ManagerError::BrokenBarrier`] instead of hanging).
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let b = m.barrier(1)?;
/// assert_eq!(b.wait()?, 0);
/// assert_eq!(b.parties()?, 1);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct BarrierProxy {
    pub(crate) obj: ObjRef,
}

plain_proxy!(BarrierProxy, BarrierObj, "BarrierProxy");

fn new_barrier(parties: usize) -> Result<BarrierObj, Fault> {
    if parties == 0 {
        return Err(Fault::Invalid("a barrier needs at least one party".into()));
    }
    Ok(BarrierObj {
        st: Mutex::new(BState {
            count: 0,
            generation: 0,
            broken: false,
            reset_round: None,
        }),
        cv: Condvar::new(),
        parties,
    })
}

fn barrier_wait(b: &BarrierObj, block: Block, cx: &Cx) -> Result<usize, Fault> {
    let mut st = lock(&b.st);
    if st.broken {
        return Err(Fault::Broken);
    }
    let index = st.count;
    st.count += 1;
    if st.count == b.parties {
        st.count = 0;
        st.generation += 1;
        drop(st);
        b.cv.notify_all();
        return Ok(index);
    }
    let generation = st.generation;
    let r = cx.wait(st, &b.cv, block, |s| {
        if s.generation != generation {
            Some(if s.reset_round == Some(generation) {
                Err(())
            } else {
                Ok(())
            })
        } else if s.broken {
            Some(Err(()))
        } else {
            None
        }
    });
    match r {
        Ok((Ok(()), _)) => Ok(index),
        Ok((Err(()), _)) => Err(Fault::Broken),
        Err((f, mut st)) => {
            // A timeout or a vanished client breaks the barrier for all.
            st.broken = true;
            drop(st);
            b.cv.notify_all();
            Err(f)
        }
    }
}

fn barrier_abort(b: &BarrierObj, reset: bool, _: &Cx) -> Result<(), Fault> {
    let mut st = lock(&b.st);
    if reset {
        if st.count > 0 {
            // Waiters of this round see it broken, as in Python.
            st.reset_round = Some(st.generation);
        }
        st.count = 0;
        st.generation += 1;
        st.broken = false;
    } else {
        st.broken = true;
    }
    drop(st);
    b.cv.notify_all();
    Ok(())
}

fn barrier_state(b: &BarrierObj, _: (), _: &Cx) -> Result<(usize, usize, bool), Fault> {
    let st = lock(&b.st);
    Ok((b.parties, st.count, st.broken))
}

impl BarrierProxy {
    pub(crate) fn create(server: &Arc<ServerRef>, parties: usize) -> Result<Self, ManagerError> {
        Ok(BarrierProxy {
            obj: ObjRef::create(server, None, None, new_barrier, &parties)?,
        })
    }

    /// Waits until `parties` callers wait; returns this caller's arrival
    /// index (0 to parties - 1).
    pub fn wait(&self) -> Result<usize, ManagerError> {
        self.obj.call(barrier_wait, &Block::Forever)
    }

    /// As [`wait`](Self::wait), for at most `t` (then
    /// [`ManagerError::Timeout`], and the barrier is broken).
    pub fn wait_timeout(&self, t: Duration) -> Result<usize, ManagerError> {
        self.obj.call(barrier_wait, &Block::For(t))
    }

    /// Breaks the barrier: waiters and later callers get
    /// [`ManagerError::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) -> Result<(), ManagerError> {
        self.obj.call(barrier_abort, &false)
    }

    /// Back to the empty, unbroken state; current waiters get
    /// [`ManagerError::BrokenBarrier`].
    pub fn reset(&self) -> Result<(), ManagerError> {
        self.obj.call(barrier_abort, &true)
    }

    /// How many callers the barrier waits for.
    pub fn parties(&self) -> Result<usize, ManagerError> {
        Ok(self.obj.call(barrier_state, &())?.0)
    }

    /// How many callers wait now.
    pub fn n_waiting(&self) -> Result<usize, ManagerError> {
        Ok(self.obj.call(barrier_state, &())?.1)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> Result<bool, ManagerError> {
        Ok(self.obj.call(barrier_state, &())?.2)
    }
}
