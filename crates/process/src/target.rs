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

/// A function a process can run with `Args`, a tuple of 0 to 6 arguments.
///
/// Implemented for every `fn` item and closure `Fn(A, B, ..) -> R` that is
/// `Copy + Send + 'static`, with `R: Outcome`. Under spawn and fork-server the
/// target must also capture nothing (the child recreates it from its type).
pub trait Target<Args>: Copy + Send + 'static {
    /// What the target returns.
    type Output: Outcome;
    /// Calls the target with the arguments unpacked.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_target {
    ($($a:ident)*) => {
        impl<F, R, $($a,)*> Target<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + Copy + Send + 'static,
            R: Outcome,
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

impl_target!();
impl_target!(A1);
impl_target!(A1 A2);
impl_target!(A1 A2 A3);
impl_target!(A1 A2 A3 A4);
impl_target!(A1 A2 A3 A4 A5);
impl_target!(A1 A2 A3 A4 A5 A6);

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
