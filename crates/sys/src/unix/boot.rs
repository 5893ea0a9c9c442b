//! Diverting a re-executed child before `main` runs.
//!
//! [`spawn_self`](crate::process::spawn_self) children that carry the
//! environment variable [`ENTRY_ENV`] never reach the program's `main`: a
//! load-time constructor (an `.init_array` entry) reads the variable, checks
//! the [`Entry`] it names, hands it the inherited socket, and exits with the
//! code the entry returns. So no init call is needed, in binaries, examples
//! or `cargo test` harnesses alike.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::code::Entry;
use super::process::exit_now;

/// The variable that makes a process an entry's child: `offset:tag:fd`.
pub const ENTRY_ENV: &str = "MP_SYS_ENTRY";

/// The variable and value that make a re-executed child call `entry` with
/// `fd` (which it must inherit) instead of running `main`.
///
/// ```
/// use mp_sys::code::Entry;
/// use std::os::fd::{AsFd, OwnedFd};
/// let e = Entry::<OwnedFd>::new(|_fd: OwnedFd| 0)?;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// let (k, v) = mp_sys::boot::entry_env(&e, r.as_fd());
/// assert_eq!(k, "MP_SYS_ENTRY");
/// assert!(v.to_str().unwrap().ends_with(&format!(":{}", std::os::fd::AsRawFd::as_raw_fd(&r))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn entry_env(entry: &Entry<OwnedFd>, fd: BorrowedFd<'_>) -> (&'static str, OsString) {
    let (offset, tag) = entry.parts();
    (ENTRY_ENV, format!("{offset}:{tag}:{}", fd.as_raw_fd()).into())
}

#[used]
#[unsafe(link_section = ".init_array")]
static BOOT: extern "C" fn() = boot;

extern "C" fn boot() {
    let Some(value) = std::env::var_os(ENTRY_ENV) else {
        return;
    };
    // SAFETY: constructors run before `main`, on the only thread; nothing
    // reads the environment concurrently. The variable is removed so that
    // this process's own children do not inherit it by accident.
    unsafe { std::env::remove_var(ENTRY_ENV) };
    let parsed = value.to_str().and_then(|v| {
        let mut it = v.split(':');
        let offset = it.next()?.parse::<i64>().ok()?;
        let tag = it.next()?.parse::<u64>().ok()?;
        let fd = it.next()?.parse::<i32>().ok()?;
        (it.next().is_none() && crate::fd::is_valid(fd)).then_some((offset, tag, fd))
    });
    let Some((offset, tag, raw)) = parsed else {
        eprintln!("multiprocessing: malformed {ENTRY_ENV}={value:?} in a re-executed child; exiting");
        exit_now(1)
    };
    // SAFETY: the parent made this descriptor inheritable for this child and
    // named it in the variable (checked open above); nothing else in this
    // fresh process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let code = match std::panic::catch_unwind(move || Entry::<OwnedFd>::from_parts(offset, tag).call(fd)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("multiprocessing: cannot start the child process: {e}");
            1
        }
        Err(_) => 1,
    };
    let _ = std::io::stdout().flush();
    exit_now(code)
}

/// Makes every process of the binary that starts with the environment
/// variable `$var` set run `$handler` before `main`, and exit with the code
/// it returns: how a worker host (`MP_CLUSTER_WORKER=url ./app`) is diverted
/// with no init call. Expands to a load-time constructor named `$name`
/// (reference it from code that runs, with [`std::hint::black_box`], so the
/// linker keeps it). A re-executed child of this library ([`ENTRY_ENV`] set)
/// is never diverted: it belongs to its entry. The variable stays in the
/// environment (removing it is not safe once threads may run).
///
/// `$handler` is a `fn(std::ffi::OsString) -> i32` taking the variable's
/// value; it runs before `main`, on the only thread, and may start threads
/// and processes. A panic in it exits with code 101.
///
/// ```
/// fn serve(value: std::ffi::OsString) -> i32 {
///     println!("would serve {value:?}");
///     0
/// }
/// mp_sys::divert_before_main!(static SERVE_HOOK = ("MP_SYS_DOCTEST_NEVER_SET", serve));
/// std::hint::black_box(&SERVE_HOOK);
/// ```
#[macro_export]
macro_rules! divert_before_main {
    (static $name:ident = ($var:expr, $handler:path)) => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        #[doc(hidden)]
        static $name: extern "C" fn() = {
            extern "C" fn divert() {
                $crate::boot::divert($var, $handler)
            }
            divert
        };
    };
}

/// What [`divert_before_main!`] runs at load time: if `var` is set (and the
/// process is not an entry's child), calls `handler` with its value and
/// exits with the code it returns; otherwise returns at once. Calling it
/// later, from `main`, is safe and does the same.
#[doc(hidden)]
pub fn divert(var: &str, handler: fn(OsString) -> i32) {
    if std::env::var_os(ENTRY_ENV).is_some() {
        return;
    }
    let Some(value) = std::env::var_os(var) else {
        return;
    };
    let code = std::panic::catch_unwind(move || handler(value)).unwrap_or(101);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}
