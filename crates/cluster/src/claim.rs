//! Which tasks a worker host has taken, cancels, and terminated pools.
//!
//! A task is taken when the workers' consumer group hands its stream entry
//! to a local process (`XREADGROUP` moves it to the group's pending list):
//! no step of its own, so a task's round trip is one read. A cancel runs
//! as a script, so it and a read never both win: it takes entries off the
//! stream only while none of them is pending (handed out) and all are
//! still there (not answered).
//!
//! A pool's claims hash `<result stream>:claims` holds one field, `T`,
//! once the pool was terminated: the local processes that run its tasks
//! stop, and a dead process's task of it gets no answer.

/// The claims hash of the pool whose results go to `reply`.
pub(crate) fn claims_key(reply: &str) -> String {
    format!("{reply}:claims")
}

/// The field of a claims hash that says the pool was terminated.
pub(crate) const TERMINATED: &str = "T";

/// The Lua function both cancel scripts start with: whether entry `id`
/// of stream `KEYS[1]` can still be cancelled (it is there and the group
/// `ARGV[1]` has not handed it out; a group that does not exist yet has
/// handed out nothing).
macro_rules! cancellable {
    () => {
        "local function cancellable(id) \
           if #redis.call('XRANGE', KEYS[1], id, id) == 0 then return false end \
           local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1) \
           if type(p) == 'table' and p.err == nil and #p > 0 then return false end \
           return true \
         end "
    };
}

/// Cancels tasks all together. KEYS[1]: the task stream; ARGV[1]: the
/// workers' group, then the tasks' entry ids. 1 when none was handed out
/// or answered (all are off the stream now), else 0 (nothing changed).
pub(crate) const CANCEL_ALL: &str = concat!(
    cancellable!(),
    "for i = 2, #ARGV do if not cancellable(ARGV[i]) then return 0 end end \
     for i = 2, #ARGV do redis.call('XDEL', KEYS[1], ARGV[i]) end \
     return 1"
);

/// Cancels each task not handed out. KEYS[1]: the task stream; ARGV[1]:
/// the workers' group, then the tasks' entry ids. One answer per id: 1
/// cancelled (off the stream), 0 handed out or answered (it runs or ran).
pub(crate) const CANCEL_EACH: &str = concat!(
    cancellable!(),
    "local out = {} \
     for i = 2, #ARGV do \
       if cancellable(ARGV[i]) then redis.call('XDEL', KEYS[1], ARGV[i]); out[i - 1] = 1 \
       else out[i - 1] = 0 end \
     end \
     return out"
);

/// Queues again the entries a local process held and did not answer (it
/// died, or stopped for a terminated pool): each still pending is added
/// anew (a new entry, handed out afresh) and taken off the group and the
/// stream. KEYS[1]: the task stream; ARGV[1]: the workers' group, then the
/// entry ids. The answer: how many were queued again.
pub(crate) const REQUEUE: &str = "local n = 0 \
    for i = 2, #ARGV do \
      local id = ARGV[i] \
      if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) > 0 then \
        local r = redis.call('XRANGE', KEYS[1], id, id) \
        if #r > 0 then redis.call('XADD', KEYS[1], '*', unpack(r[1][2])); n = n + 1 end \
        redis.call('XACK', KEYS[1], ARGV[1], id) \
        redis.call('XDEL', KEYS[1], id) \
      end \
    end \
    return n";

#[cfg(test)]
mod tests {
    #[test]
    fn the_cancel_scripts_check_the_pending_list() {
        assert!(super::CANCEL_ALL.contains("XPENDING"));
        assert!(super::CANCEL_EACH.contains("XPENDING"));
        assert_eq!(super::claims_key("mp:results:1"), "mp:results:1:claims");
    }
}
