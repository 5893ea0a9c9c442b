//! Claims: which tasks of a pool a worker host has taken, which were
//! cancelled, and whether the pool was terminated, in one Redis hash per
//! pool, changed only by scripts (so a claim and a cancel never both win).
//!
//! The hash `<result stream>:claims` maps a task id to the id of the worker
//! host that claimed it, or to `x` once cancelled; its field `T` says the
//! pool was terminated. A host claims the tasks of one read in one script
//! before it runs any of them, and runs only those it claimed.

/// The claims hash of the pool whose results go to `reply`.
pub(crate) fn claims_key(reply: &str) -> String {
    format!("{reply}:claims")
}

/// The field of a claims hash that says the pool was terminated.
pub(crate) const TERMINATED: &str = "T";

/// Claims tasks for a worker host. KEYS: the claims hashes; ARGV[1]: the
/// host's id, then pairs (index into KEYS, task id). One answer per pair:
/// 0 claimed (run it), 1 cancelled, 2 its pool was terminated (drop it). A
/// task claimed by another host before (which died: the entry was taken
/// over) is claimed again.
pub(crate) const CLAIM: &str = "local out = {} \
    for i = 2, #ARGV, 2 do \
      local k = KEYS[tonumber(ARGV[i])] \
      local id = ARGV[i + 1] \
      if redis.call('HEXISTS', k, 'T') == 1 then out[#out + 1] = 2 \
      elseif redis.call('HGET', k, id) == 'x' then out[#out + 1] = 1 \
      else redis.call('HSET', k, id, ARGV[1]); out[#out + 1] = 0 end \
    end \
    return out";

/// Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1]
/// on the task stream KEYS[1] without blocking, and claims each that names
/// its pool (fields `r`, the result stream, and `i`, the task id) as
/// [`CLAIM`] does, in the same step: one round trip per read while tasks
/// wait. ARGV[4]: the claims hash's suffix. The answer: pairs {entry,
/// mark}, the marks of [`CLAIM`], or -1 for an entry that names no pool
/// (claimed apart, or answered as damaged).
pub(crate) const READ_CLAIM: &str = "local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], \
      'STREAMS', KEYS[1], '>') \
    if not r then return {} end \
    local out = {} \
    for i, e in ipairs(r[1][2]) do \
      local f = e[2] \
      local reply, id \
      for j = 1, #f - 1, 2 do \
        if f[j] == 'r' then reply = f[j + 1] elseif f[j] == 'i' then id = f[j + 1] end \
      end \
      local mark = -1 \
      if reply and id then \
        local k = reply .. ARGV[4] \
        if redis.call('HEXISTS', k, 'T') == 1 then mark = 2 \
        elseif redis.call('HGET', k, id) == 'x' then mark = 1 \
        else redis.call('HSET', k, id, ARGV[2]); mark = 0 end \
      end \
      out[i] = {e, mark} \
    end \
    return out";

/// Cancels tasks all together. KEYS[1]: the claims hash; ARGV: the task
/// ids. 1 when none was claimed (all are marked cancelled now), else 0
/// (nothing changed).
pub(crate) const CANCEL_ALL: &str = "for i = 1, #ARGV do \
      local v = redis.call('HGET', KEYS[1], ARGV[i]) \
      if v and v ~= 'x' then return 0 end \
    end \
    for i = 1, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], 'x') end \
    return 1";

/// Cancels each task not claimed. KEYS[1]: the claims hash; ARGV: the
/// task ids. One answer per id: 1 cancelled, 0 claimed (it runs).
pub(crate) const CANCEL_EACH: &str = "local out = {} \
    for i = 1, #ARGV do \
      local v = redis.call('HGET', KEYS[1], ARGV[i]) \
      if v and v ~= 'x' then out[i] = 0 \
      else redis.call('HSET', KEYS[1], ARGV[i], 'x'); out[i] = 1 end \
    end \
    return out";

#[cfg(test)]
mod tests {
    #[test]
    fn the_claim_script_checks_the_terminated_field() {
        assert!(super::CLAIM.contains(&format!("'{}'", super::TERMINATED)));
        assert_eq!(super::claims_key("mp:results:1"), "mp:results:1:claims");
    }
}
