//! What travels through Redis: task and result messages, values encoded by
//! the workspace codec, and the trampoline a worker process calls a task
//! through.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use mp_process::Function;
use mp_sys::code::Entry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// The largest entry (task or result) a peer accepts: 512 MiB, Redis's own
/// limit for a string.
pub(crate) const MAX_ENTRY: usize = 512 << 20;

/// One chunk of a pool's work: the function's entry, its arguments, where
/// the result goes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct TaskMsg {
    /// Unique among the tasks of the reply stream.
    pub(crate) id: u64,
    /// The client's result stream.
    pub(crate) reply: String,
    /// The function's [`Entry`] parts.
    pub(crate) entry: (i64, u64),
    /// How many times the task may be handed out before it fails with
    /// `WorkerLost` (the client's `max_deliveries`).
    pub(crate) max_deliveries: u32,
    /// The chunk's items, encoded together (a `Vec` of argument tuples).
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
}

/// A worker's answer for one task.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ResultMsg {
    pub(crate) id: u64,
    /// The worker that ran it (for diagnostics).
    pub(crate) worker: String,
    /// The chunk's results (an encoded `Vec<Result<R, Fail>>`), or why the
    /// whole chunk failed.
    pub(crate) outcome: Result<serde_bytes::ByteBuf, Fail>,
}

/// The field of a result stream's entry that says a host runs a task (the
/// task id, in decimal) rather than answering it: a local process's watch
/// thread writes one for a chunk that has run for a while.
pub(crate) const STARTED: &str = "s";

/// What one entry of a result stream says.
pub(crate) enum Answer {
    /// A host runs task `id` (no result yet).
    Started(u64),
    /// A task's result.
    Result(ResultMsg),
    /// Neither: written by another program, or damaged.
    Damaged(String),
}

impl Answer {
    pub(crate) fn of(e: &crate::conn::StreamEntry) -> Answer {
        match e.field("r") {
            Some(bytes) => decode::<ResultMsg>(bytes).map_or_else(Answer::Damaged, Answer::Result),
            None => match e.field(STARTED).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()) {
                Some(id) => Answer::Started(id),
                None => Answer::Damaged("no result field".into()),
            },
        }
    }
}

/// How a task (or one item of a chunk) failed on the worker's side.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    Panicked(String),
    Encode(String),
    Decode(String),
    WorkerLost(i32),
    /// The worker could not run the task: another build, or a damaged entry.
    Refused(String),
}

impl From<Fail> for ClusterError {
    fn from(f: Fail) -> ClusterError {
        use mp_pool::TaskError;
        match f {
            Fail::Panicked(m) => ClusterError::Task(TaskError::Panicked(m)),
            Fail::Encode(m) => ClusterError::Task(TaskError::Encode(m)),
            Fail::Decode(m) => ClusterError::Task(TaskError::Decode(m)),
            Fail::WorkerLost(code) => ClusterError::Task(TaskError::WorkerLost { exitcode: code }),
            Fail::Refused(m) => ClusterError::Decode(m),
        }
    }
}

/// Encodes a value for another host: the workspace codec's bytes, refusing
/// the handles of one host (queues, locks, shared memory), whose
/// descriptors cannot cross machines.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let frame = mp_codec::encode(value).map_err(|e| e.to_string())?;
    if !frame.fds().is_empty() {
        return Err(format!(
            "the value holds {} local handle(s) (a Queue, Lock, Value, SharedMemory, Connection or a manager \
             proxy): they work on one host only; use cluster::Queue or cluster::Dict to share across hosts",
            frame.fds().len()
        ));
    }
    Ok(frame.into_payload())
}

/// Decodes bytes from Redis. Damaged or foreign bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_ENTRY {
        return Err(format!(
            "an entry of {} bytes, over the limit of {MAX_ENTRY}",
            bytes.len()
        ));
    }
    mp_codec::decode_payload(bytes, Vec::new()).map_err(|e| e.to_string())
}

/// What a worker process hands a task's trampoline: the chunk's encoded
/// arguments, and where to leave the encoded results.
pub(crate) struct Call {
    args: Vec<u8>,
    out: Rc<RefCell<Option<ChunkOutcome>>>,
}

/// A chunk's encoded results, or why it has none.
type ChunkOutcome = Result<Vec<u8>, Fail>;

/// The entry of `f` over chunks of argument tuples `A`: what the client
/// sends, and a worker process calls through [`run_chunk`].
pub(crate) fn entry_of<F, A>(f: F) -> Result<Entry<Call>, ClusterError>
where
    F: Function<A, Output: Serialize>,
    A: DeserializeOwned,
{
    Entry::new(move |call: Call| chunk_thunk::<F, A>(f, call)).map_err(|e| ClusterError::Encode(e.to_string()))
}

fn chunk_thunk<F, A>(f: F, call: Call) -> i32
where
    F: Function<A, Output: Serialize>,
    A: DeserializeOwned,
{
    let outcome = decode::<Vec<A>>(&call.args)
        .map_err(|e| Fail::Decode(format!("the task's arguments: {e}")))
        .and_then(|items| {
            let results: Vec<Result<F::Output, Fail>> = items
                .into_iter()
                .map(|a| {
                    panic::catch_unwind(AssertUnwindSafe(|| f.call(a))).map_err(|p| Fail::Panicked(panic_message(&p)))
                })
                .collect();
            encode(&results).map_err(|e| Fail::Encode(format!("the task's results: {e}")))
        });
    *call.out.borrow_mut() = Some(outcome);
    0
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked (a payload that is not a string)".into()
    }
}

/// Runs one chunk in this (worker) process: what a worker host's local
/// process runs for every task. A task named by another build, or damaged
/// on the way, is refused without a jump.
pub(crate) fn run_chunk(offset: i64, tag: u64, args: serde_bytes::ByteBuf) -> Result<serde_bytes::ByteBuf, Fail> {
    let out = Rc::new(RefCell::new(None));
    let call = Call {
        args: args.into_vec(),
        out: Rc::clone(&out),
    };
    match Entry::<Call>::from_parts(offset, tag).call(call) {
        Ok(_) => {}
        Err(e) => return Err(Fail::Refused(e.to_string())),
    }
    let r = out.borrow_mut().take();
    match r {
        Some(r) => r.map(serde_bytes::ByteBuf::from),
        None => Err(Fail::Refused("the task's entry returned no result".into())),
    }
}
