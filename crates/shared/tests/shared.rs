//! mp-shared's values, arrays and segments shared with child processes under
//! every start method, from a single-threaded main (the fork method needs
//! one; see DESIGN.md, fork safety).
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

fn guards_write_back_only_changes() -> Check {
    let a = ok(Array::from_slice(&[1u8, 2, 3]))?;
    {
        let g = ok(a.lock())?;
        check(g.len() == 3 && g[0] == 1, "the guard reads the elements")?;
        // Not changed through the guard: a raw write meanwhile survives.
        a.set(0, 9).map_err(|e| e.to_string())?;
    }
    check(a.get(0) == Some(9), "an unchanged guard overwrote the array")?;
    let v = ok(Value::new(5i32))?;
    {
        let mut g = ok(v.lock())?;
        *g += 1;
        check(v.get() == 5, "the guard works on a copy until it drops")?;
    }
    check(v.get() == 6, "the guard's change was written back")
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
    let with_method: [(&str, Scenario); 9] = [
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
        ("shared_memory_from_a_child", shared_memory_from_a_child),
        ("shareable_list_from_a_child", shareable_list_from_a_child),
    ];
    let local: [(&str, Test); 4] = [
        ("bad_input_is_a_clear_error", bad_input_is_a_clear_error),
        ("guards_write_back_only_changes", guards_write_back_only_changes),
        ("no_leaks", no_leaks),
        ("handle_bounds", handle_bounds),
    ];
    suite(&local, &with_method, &METHODS)
}
