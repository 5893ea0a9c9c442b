//! mp-shared's values, arrays and segments shared with child processes under
//! every start method, from a single-threaded main (the fork method needs
//! one; see docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-shared --test shared [filter]`.

use std::process::ExitCode;

use bytemuck::{Pod, Zeroable};
use mp_process::{Process, StartMethod, exit, get_context};
use mp_shared::{Array, RawArray, RawValue, ShareableList, SharedError, SharedMemory, Value};
use mp_sync::Event;
use mp_testkit::{METHODS, PATIENCE, Test, check, finish, ok, shm_entries, suite};

type Check = Result<(), String>;

fn run(p: &mut Process) -> Result<i32, String> {
    ok(p.start())?;
    finish(p)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Point {
    x: f64,
    y: f64,
    hits: u32,
    flags: u32,
}

// ---- child targets ---------------------------------------------------------

/// Seed 003 part 5: `n.value = 3.1415927; a[i] = -a[i]`.
#[allow(clippy::approx_constant, reason = "the seed's literal, not pi")]
fn pi_and_negate(num: Value<f64>, arr: Array<i32>) -> Result<(), String> {
    num.set(3.1415927);
    for x in ok(arr.lock())?.iter_mut() {
        *x = -*x;
    }
    Ok(())
}

fn move_point(p: Value<Point>) -> Result<(), String> {
    let mut g = ok(p.lock())?;
    g.x += 1.5;
    g.y = -g.y;
    g.hits += 1;
    Ok(())
}

fn increment(v: Value<u64>, n: u32) -> Result<(), String> {
    for _ in 0..n {
        let _held = ok(v.get_lock().acquire())?;
        v.set(v.get() + 1);
    }
    Ok(())
}

fn increment_with_guard(v: Value<u64>, n: u32) -> Result<(), String> {
    for _ in 0..n {
        *ok(v.lock())? += 1;
    }
    Ok(())
}

fn sum_into(arr: Array<f64>, out: Value<f64>) {
    let sum: f64 = arr.to_vec().iter().sum();
    out.set(sum);
}

fn raw_writes(v: RawValue<i16>, a: RawArray<u8>) -> Result<(), String> {
    v.set(-300);
    ok(a.set_slice(0, b"raw!"))
}

/// Allocates shared values, says so, and waits to be killed.
fn allocate_and_hang(ready: Event) -> Result<(), String> {
    let mut keep = Vec::new();
    for i in 0..10 {
        keep.push(ok(Array::<u64>::from_slice(&[i; 4096]))?);
    }
    let v = ok(Value::new(1u8))?;
    let _held = ok(v.lock())?;
    ready.set();
    loop {
        std::thread::park();
    }
}

fn hold_value_lock(v: Value<u32>, ready: Event) -> Result<(), String> {
    let mut g = ok(v.lock())?;
    *g = 99;
    drop(g);
    let _held = ok(v.get_lock().acquire())?;
    ready.set();
    loop {
        std::thread::park();
    }
}

/// Writes through both guards and dies holding them (the parent kills it):
/// no write-back ever runs, so what the next holder sees is what was written
/// in place.
fn die_holding_guards(v: Value<u32>, a: Array<u64>, ready: Event) -> Result<(), String> {
    let mut gv = ok(v.lock())?;
    *gv = 77;
    let mut ga = ok(a.lock())?;
    for (i, x) in ga.iter_mut().enumerate() {
        *x = i as u64 * 3;
    }
    ready.set();
    loop {
        std::thread::park();
    }
}

/// Attaches by name and by handle, checks the creator's bytes, answers.
fn shm_child(name: String, handle: SharedMemory) -> Result<(), String> {
    let mut by_name = ok(SharedMemory::attach(&name))?;
    if &by_name.as_slice()[..12] != b"from parent!" || &handle.as_slice()[..12] != b"from parent!" {
        exit(3);
    }
    by_name.as_mut_slice()[16..27].copy_from_slice(b"from child!");
    Ok(())
}

fn list_child(name: String, sent: ShareableList<u32>) -> Result<(), String> {
    let mut list = ok(ShareableList::<u32>::attach(&name))?;
    if sent.to_vec() != [1, 2, 3] {
        exit(3);
    }
    ok(list.set(2, 30))
}

// ---- scenarios with a start method -----------------------------------------

#[allow(clippy::approx_constant, reason = "the seed's literal, not pi")]
fn value_and_array_in_a_child(m: StartMethod) -> Check {
    let num = ok(Value::new(0.0f64))?;
    let arr = ok(Array::from_slice(&(0..10).collect::<Vec<i32>>()))?;
    let code = run(&mut get_context(m).process(pi_and_negate, (num.clone(), arr.clone())))?;
    check(code == 0, format!("child exit {code}"))?;
    check(num.get() == 3.1415927, format!("num = {}", num.get()))?;
    check(
        arr.to_vec() == [0, -1, -2, -3, -4, -5, -6, -7, -8, -9],
        format!("arr = {:?}", arr.to_vec()),
    )
}

fn repr_c_struct_in_a_value(m: StartMethod) -> Check {
    let p = ok(Value::new(Point {
        x: 1.0,
        y: 2.0,
        hits: 0,
        flags: 7,
    }))?;
    for _ in 0..2 {
        check(
            run(&mut get_context(m).process(move_point, (p.clone(),)))? == 0,
            "child failed",
        )?;
    }
    let got = p.get();
    check(
        got == Point {
            x: 4.0,
            y: 2.0,
            hits: 2,
            flags: 7,
        },
        format!("{got:?}"),
    )
}

fn counter_under_get_lock(m: StartMethod) -> Check {
    const PROCS: usize = 10;
    const EACH: u32 = 1000;
    let ctx = get_context(m);
    let v = ok(Value::new(0u64))?;
    let mut kids: Vec<Process> = (0..PROCS)
        .map(|i| {
            if i % 2 == 0 {
                ctx.process(increment, (v.clone(), EACH))
            } else {
                ctx.process(increment_with_guard, (v.clone(), EACH))
            }
        })
        .collect();
    for k in &mut kids {
        ok(k.start())?;
    }
    for k in &mut kids {
        check(finish(k)? == 0, "a child failed")?;
    }
    let total = v.get();
    check(
        total == PROCS as u64 * u64::from(EACH),
        format!("{PROCS} x {EACH} locked increments gave {total}"),
    )
}

fn array_of_a_million_summed_in_a_child(m: StartMethod) -> Check {
    let data: Vec<f64> = (0..1_000_000).map(|i| f64::from(i) * 0.5).collect();
    let expected: f64 = data.iter().sum();
    let arr = ok(Array::from_slice(&data))?;
    let out = ok(Value::new(0.0f64))?;
    check(
        run(&mut get_context(m).process(sum_into, (arr, out.clone())))? == 0,
        "child failed",
    )?;
    check(out.get() == expected, format!("sum {} != {expected}", out.get()))
}

fn raw_value_and_array_in_a_child(m: StartMethod) -> Check {
    let v = ok(RawValue::new(0i16))?;
    let a = ok(RawArray::<u8>::new(4))?;
    check(
        run(&mut get_context(m).process(raw_writes, (v.clone(), a.clone())))? == 0,
        "child failed",
    )?;
    check(v.get() == -300, format!("raw value {}", v.get()))?;
    check(a.to_vec() == b"raw!", format!("raw array {:?}", a.to_vec()))
}

fn a_killed_child_leaves_nothing(m: StartMethod) -> Check {
    let shm_before = shm_entries();
    let fds_before = ok(mp_sys::fd::count_open_fds())?;
    let ready = ok(Event::new())?;
    let mut p = get_context(m).process(allocate_and_hang, (ready.clone(),));
    ok(p.start())?;
    check(ready.wait_timeout(PATIENCE), "the child did not allocate")?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the child was not killed")?;
    drop(p);
    drop(ready);
    check(shm_entries() == shm_before, "/dev/shm changed")?;
    let fds_after = ok(mp_sys::fd::count_open_fds())?;
    check(fds_after == fds_before, format!("fds {fds_before} -> {fds_after}"))
}

fn a_value_whose_holder_died(m: StartMethod) -> Check {
    let v = ok(Value::new(0u32))?;
    let ready = ok(Event::new())?;
    let mut p = get_context(m).process(hold_value_lock, (v.clone(), ready.clone()));
    ok(p.start())?;
    check(ready.wait_timeout(PATIENCE), "the child did not take the lock")?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the child was not killed")?;
    match v.lock() {
        Err(e) if e.owner_died() => {
            let mut g = e.into_inner();
            check(*g == 99, format!("the value under the dead holder's lock: {}", *g))?;
            *g = 100;
        }
        Err(e) => return Err(format!("expected owner_died, got {e}")),
        Ok(_) => return Err("the lock of a killed holder came back clean".into()),
    }
    check(v.get() == 100, "the recovering guard wrote the value back")
}

/// A holder killed while its guards live leaves what it wrote through them;
/// the next acquirer sees it through `owner_died()` -> `into_inner()`.
fn a_holder_killed_mid_guard_leaves_its_writes(m: StartMethod) -> Check {
    const N: usize = 100_000;
    let v = ok(Value::new(0u32))?;
    let a = ok(Array::<u64>::new(N))?;
    let ready = ok(Event::new())?;
    let mut p = get_context(m).process(die_holding_guards, (v.clone(), a.clone(), ready.clone()));
    ok(p.start())?;
    check(ready.wait_timeout(PATIENCE), "the child did not write under its guards")?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the child was not killed")?;
    let gv = match v.lock() {
        Err(e) if e.owner_died() => e.into_inner(),
        Err(e) => return Err(format!("Value: expected owner_died, got {e}")),
        Ok(_) => return Err("the Value lock of a killed holder came back clean".into()),
    };
    check(*gv == 77, format!("the Value under the dead holder's guard: {}", *gv))?;
    let mut ga = match a.lock() {
        Err(e) if e.owner_died() => e.into_inner(),
        Err(e) => return Err(format!("Array: expected owner_died, got {e}")),
        Ok(_) => return Err("the Array lock of a killed holder came back clean".into()),
    };
    let bad = ga.iter().enumerate().position(|(i, &x)| x != i as u64 * 3);
    check(
        bad.is_none(),
        format!("the dead holder's write of element {bad:?} is lost"),
    )?;
    ga[0] = 5;
    drop(ga);
    drop(gv);
    check(
        a.get(0) == Some(5) && v.get() == 77,
        "the recovered guards work in place",
    )
}

fn shared_memory_from_a_child(m: StartMethod) -> Check {
    let mut shm = ok(SharedMemory::create(None, 64))?;
    shm.as_mut_slice()[..12].copy_from_slice(b"from parent!");
    let name = shm.name().to_owned();
    let code = run(&mut get_context(m).process(shm_child, (name.clone(), shm.clone())))?;
    let seen = shm.as_slice()[16..27].to_vec();
    ok(shm.unlink())?;
    check(code == 0, format!("child exit {code}"))?;
    check(seen == b"from child!", format!("{:?}", String::from_utf8_lossy(&seen)))?;
    check(
        !shm_entries().contains(&name),
        "the segment is still in /dev/shm after unlink",
    )?;
    check(
        matches!(SharedMemory::attach(&name), Err(SharedError::NotFound(_))),
        "attach after unlink",
    )
}

fn shareable_list_from_a_child(m: StartMethod) -> Check {
    let list = ok(ShareableList::create(&[1u32, 2, 3], None))?;
    let code = run(&mut get_context(m).process(list_child, (list.name().to_owned(), list.clone())))?;
    let got = list.to_vec();
    ok(list.shm().unlink())?;
    check(code == 0, format!("child exit {code}"))?;
    check(got == [1, 2, 30], format!("{got:?}"))
}

// ---- scenarios within one process ------------------------------------------

fn bad_input_is_a_clear_error() -> Check {
    let shm = ok(SharedMemory::create(None, 100))?;
    let name = shm.name().to_owned();
    let r = SharedMemory::attach_with_size(&name, 101);
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    check(msg.contains("holds 100 bytes"), format!("attach larger: {msg:?}"))?;
    let r = SharedMemory::attach_with_size(&name, 0);
    check(matches!(r, Err(SharedError::InvalidArgument(_))), "attach with size 0")?;
    check(
        matches!(
            SharedMemory::create(Some(&name), 10),
            Err(SharedError::AlreadyExists(_))
        ),
        "create over an existing name",
    )?;
    ok(shm.unlink())?;
    let r = SharedMemory::create(None, 0);
    check(matches!(r, Err(SharedError::InvalidArgument(_))), "create with size 0")?;
    let long = "n".repeat(300);
    let msg = SharedMemory::create(Some(&long), 8)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(msg.contains("limit is 254"), format!("long name: {msg:?}"))?;
    let msg = SharedMemory::create(Some("a/b"), 8)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(msg.contains("contains '/'"), format!("slash: {msg:?}"))?;
    check(
        matches!(SharedMemory::attach("psm_never_made"), Err(SharedError::NotFound(_))),
        "attach a missing name",
    )?;
    let a = ok(Array::<i32>::new(3))?;
    check(a.get(3).is_none(), "get past the end")?;
    check(
        matches!(a.set(3, 0), Err(SharedError::OutOfRange { index: 3, len: 3 })),
        "set past the end",
    )?;
    check(
        matches!(a.set_slice(2, &[1, 2]), Err(SharedError::OutOfRange { .. })),
        "set_slice past the end",
    )?;
    // A handle decoded as another type.
    let v = ok(Value::new(1.0f64))?;
    let e = mp_codec::decode::<Value<u32>>(ok(mp_codec::encode(&v))?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(e.contains("expected a Value<u32> handle"), format!("wrong type: {e:?}"))?;
    let e = mp_codec::decode::<RawValue<f64>>(ok(mp_codec::encode(&ok(RawArray::<f64>::new(1))?))?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(e.contains("got a RawArray"), format!("wrong kind: {e:?}"))?;
    let list = ok(ShareableList::create(&[1u8], None))?;
    let e = ShareableList::<u64>::attach(list.name())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ok(list.shm().unlink())?;
    check(e.contains("another type"), format!("list of another type: {e:?}"))
}

/// A guard is the shared memory itself: its writes are seen at once by the
/// same thread's `get` (the lock is reentrant), a `set` meanwhile is seen
/// through the guard, and a second guard on the same thread sees both.
fn guards_are_the_shared_memory() -> Check {
    let a = ok(Array::from_slice(&[1u8, 2, 3]))?;
    {
        let mut g = ok(a.lock())?;
        check(g.len() == 3 && g[0] == 1, "the guard reads the elements")?;
        g[1] = 20;
        check(a.get(1) == Some(20), "a write through the guard is not seen by get")?;
        ok(a.set(0, 9))?;
        check(g[0] == 9, "a set under the guard is not seen through it")?;
        let mut again = ok(a.lock())?;
        again[2] = 30;
        check(
            g[2] == 30 && a.to_vec() == [9, 20, 30],
            "a reentrant guard is not the same memory",
        )?;
    }
    check(a.to_vec() == [9, 20, 30], "the writes stayed")?;
    let v = ok(Value::new(5i32))?;
    let other = v.clone();
    {
        let mut g = ok(v.lock())?;
        *g += 1;
        check(
            v.get() == 6 && other.get() == 6,
            "a Value guard's write is not seen at once",
        )?;
    }
    check(v.get() == 6, "the Value guard's change stayed")
}

/// Locking a 64 MiB Array costs what locking a 1-byte one does: no copy.
/// The times are printed (speed is shown by numbers, never asserted); what
/// is checked is that the guard of the large one is the shared memory.
fn lock_of_64_mib_and_of_1_byte() -> Check {
    fn time_locks<T: mp_shared::Pod>(a: &Array<T>) -> Result<(std::time::Duration, std::time::Duration), String> {
        let t = std::time::Instant::now();
        drop(ok(a.lock())?);
        let first = t.elapsed();
        const N: u32 = 1000;
        let t = std::time::Instant::now();
        for _ in 0..N {
            drop(ok(a.lock())?);
        }
        Ok((first, t.elapsed() / N))
    }
    let big = ok(Array::<u8>::new(64 << 20))?;
    let small = ok(Array::<u8>::new(1))?;
    let (big_first, big_each) = time_locks(&big)?;
    let (small_first, small_each) = time_locks(&small)?;
    println!(
        "    lock()+drop: 64 MiB first {big_first:?}, then {big_each:?} each; \
         1 byte first {small_first:?}, then {small_each:?} each"
    );
    let mut g = ok(big.lock())?;
    let last = g.len() - 1;
    g[last] = 7;
    check(big.get(last) == Some(7), "the 64 MiB guard is not the shared memory")
}

#[repr(C, align(1048576))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Aligned1M([[u8; 4096]; 256]);

/// Views of a wrong size, alignment or shape are errors, not panics.
fn wrong_views_are_errors() -> Check {
    let mut shm = ok(SharedMemory::create(None, 1 << 20))?;
    let e = shm.as_slice_of::<[u8; 3]>().map(|_| ()).map_err(|e| e.to_string());
    check(
        matches!(&e, Err(m) if m.contains("whole number")),
        format!("size: {e:?}"),
    )?;
    check(shm.as_mut_slice_of::<[u8; 7]>().is_err(), "a 7-byte element fits 1 MiB")?;
    check(ok(shm.as_slice_of::<f64>())?.len() == 1 << 17, "f64 view length")?;
    // A segment starts on a page: a 1 MiB-aligned element fits only when the
    // kernel happened to map it on a 1 MiB boundary; either way, no panic.
    let aligned = (shm.as_slice().as_ptr() as usize).is_multiple_of(1 << 20);
    match shm.as_slice_of::<Aligned1M>() {
        Ok(v) => check(aligned && v.len() == 1, "a misaligned view was made")?,
        Err(e) => check(!aligned && e.to_string().contains("aligned"), format!("alignment: {e}"))?,
    }
    #[cfg(feature = "ndarray")]
    {
        check(shm.ndarray_view::<f64>(&[1024, 128]).is_ok(), "an exact shape")?;
        check(
            shm.ndarray_view::<f64>(&[512, 128]).is_ok(),
            "a smaller shape (NumPy's prefix)",
        )?;
        let e = shm
            .ndarray_view::<f64>(&[1025, 128])
            .map(|_| ())
            .map_err(|e| e.to_string());
        check(
            matches!(&e, Err(m) if m.contains("do not fit")),
            format!("too large: {e:?}"),
        )?;
        check(
            shm.ndarray_view_mut::<u8>(&[usize::MAX, 2]).is_err(),
            "an overflowing shape",
        )?;
        let a = ok(Array::<f64>::new(12))?;
        let mut g = ok(a.lock())?;
        check(
            g.view_mut(&[3, 4]).is_ok() && g.view(&[2, 2, 3]).is_ok(),
            "exact shapes",
        )?;
        let e = g.view_mut(&[5, 2]).map(|_| ()).map_err(|e| e.to_string());
        check(
            matches!(&e, Err(m) if m.contains("holds 10 elements")),
            format!("shape: {e:?}"),
        )?;
        check(g.view(&[13]).is_err() && g.view(&[]).is_err(), "wrong shapes")?;
    }
    ok(shm.close())?;
    check(matches!(shm.as_slice_of::<u8>(), Err(SharedError::Closed(_))), "closed")?;
    ok(SharedMemory::attach(shm.name()).and_then(|s| s.unlink()))
}

fn no_leaks() -> Check {
    let shm_before = shm_entries();
    let fds_before = ok(mp_sys::fd::count_open_fds())?;
    for i in 0..1000u32 {
        let v = ok(Value::new(i))?;
        let a = ok(Array::<u32>::new(16))?;
        let rv = ok(RawValue::new(i))?;
        let ra = ok(RawArray::<u32>::new(16))?;
        *ok(v.lock())? += 1;
        ok(a.set(1, i))?;
        rv.set(1);
        ok(ra.set(1, 1))?;
    }
    let fds_after = ok(mp_sys::fd::count_open_fds())?;
    check(fds_after == fds_before, format!("fds {fds_before} -> {fds_after}"))?;
    check(shm_entries() == shm_before, "/dev/shm changed")
}

fn handle_bounds() -> Check {
    fn handle<T: Clone + Send + Sync + serde::Serialize + for<'de> serde::Deserialize<'de> + 'static>() {}
    handle::<Value<f64>>();
    handle::<Array<i32>>();
    handle::<RawValue<Point>>();
    handle::<RawArray<u8>>();
    handle::<SharedMemory>();
    handle::<ShareableList<u64>>();
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<SharedError>();
    Ok(())
}

type Scenario = fn(StartMethod) -> Check;

fn main() -> ExitCode {
    let with_method: [(&str, Scenario); 10] = [
        ("value_and_array_in_a_child", value_and_array_in_a_child),
        ("repr_c_struct_in_a_value", repr_c_struct_in_a_value),
        ("counter_under_get_lock", counter_under_get_lock),
        (
            "array_of_a_million_summed_in_a_child",
            array_of_a_million_summed_in_a_child,
        ),
        ("raw_value_and_array_in_a_child", raw_value_and_array_in_a_child),
        ("a_killed_child_leaves_nothing", a_killed_child_leaves_nothing),
        ("a_value_whose_holder_died", a_value_whose_holder_died),
        (
            "a_holder_killed_mid_guard_leaves_its_writes",
            a_holder_killed_mid_guard_leaves_its_writes,
        ),
        ("shared_memory_from_a_child", shared_memory_from_a_child),
        ("shareable_list_from_a_child", shareable_list_from_a_child),
    ];
    let local: [(&str, Test); 6] = [
        ("bad_input_is_a_clear_error", bad_input_is_a_clear_error),
        ("guards_are_the_shared_memory", guards_are_the_shared_memory),
        ("lock_of_64_mib_and_of_1_byte", lock_of_64_mib_and_of_1_byte),
        ("wrong_views_are_errors", wrong_views_are_errors),
        ("no_leaks", no_leaks),
        ("handle_bounds", handle_bounds),
    ];
    suite(&local, &with_method, &METHODS)
}
