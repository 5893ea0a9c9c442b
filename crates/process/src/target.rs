//! What a process runs: a target function of 0 to 6 arguments, or a value
//! with a `run` method.

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a target may return: `()`, or `Result<(), E>` with a displayable
/// error (which ends the child with exit code 1 and the message on stderr).
pub trait Outcome {
    /// The outcome as a result, the error as text.
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A function called with its arguments as a tuple of 0 to 6 values: what
/// a process, a pool task or an executor task runs.
///
/// Implemented for every `fn` item and closure `Fn(A, B, ..) -> R` that is
/// `Copy + Send + 'static`. Under spawn and fork-server (and in pools, under
/// every method) the function must also capture nothing: the other process
/// recreates it from its type.
///
/// ```
/// use mp_process::Function;
/// fn add(a: i32, b: i32) -> i32 { a + b }
/// assert_eq!(add.call((2, 3)), 5);
/// assert_eq!((|| "hi").call(()), "hi");
/// ```
pub trait Function<Args>: Copy + Send + 'static {
    /// What the function returns.
    type Output;
    /// Calls the function with the arguments unpacked.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_function {
    ($($a:ident)*) => {
        impl<F, R, $($a,)*> Function<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + Copy + Send + 'static,
        {
            type Output = R;
            #[allow(non_snake_case, reason = "the arguments are named after their types")]
            fn call(self, args: ($($a,)*)) -> R {
                let ($($a,)*) = args;
                self($($a),*)
            }
        }
    };
}

impl_function!();
impl_function!(A1);
impl_function!(A1 A2);
impl_function!(A1 A2 A3);
impl_function!(A1 A2 A3 A4);
impl_function!(A1 A2 A3 A4 A5);
impl_function!(A1 A2 A3 A4 A5 A6);

/// A function a process can run with `Args`, a tuple of 0 to 6 arguments: a
/// [`Function`] whose result is an [`Outcome`] (`()` or `Result<(), E>`).
pub trait Target<Args>: Function<Args, Output: Outcome> {}

impl<F: Function<Args, Output: Outcome>, Args> Target<Args> for F {}

/// Python's `Process` subclass with a `run()` method: the value travels to
/// the child and `run` is called there.
///
/// ```
/// use mp_process::{Process, Run};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Greeter { who: String }
/// impl Run for Greeter {
///     fn run(self) { println!("hello, {}", self.who); }
/// }
/// let mut p = Process::from_run(Greeter { who: "world".into() });
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
pub trait Run: Serialize + DeserializeOwned + Send + 'static {
    /// What the child runs.
    fn run(self);
}

/// Arguments a target can be started with.
pub trait Args: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Args for T {}
