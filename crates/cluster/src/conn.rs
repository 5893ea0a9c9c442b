//! One Redis connection with timeouts, that reconnects after a failure, and
//! the parsing of stream replies.

use std::time::Duration;

use redis::{Client, Cmd, FromRedisValue, Pipeline, Value};

use crate::ClusterError;

/// How long connecting, and a command that does not block, may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that is opened on first use and again after an I/O
/// failure (whose reply may still be in flight, so the old socket is never
/// reused).
pub(crate) struct Conn {
    client: Client,
    addr: String,
    con: Option<redis::Connection>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.addr).finish()
    }
}

/// The client for `url`, and the address to name in errors.
pub(crate) fn client(url: &str) -> Result<(Client, String), ClusterError> {
    let addr = redacted(url);
    let connect_err = |source| ClusterError::Connect {
        addr: addr.clone(),
        source,
    };
    // TCP_NODELAY: a request or answer goes out at once, never held back
    // for the acknowledgement of an earlier one (the crate's default
    // leaves Nagle's algorithm on).
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(connect_err)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = Client::open(info).map_err(connect_err)?;
    Ok((client, addr))
}

/// The URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Conn {
    pub(crate) fn new(client: Client, addr: String) -> Conn {
        Conn {
            client,
            addr,
            con: None,
        }
    }

    /// Opens the connection now (to report a bad address at once).
    pub(crate) fn open(&mut self) -> Result<&mut redis::Connection, ClusterError> {
        if self.con.is_none() {
            let connect_err = |source| ClusterError::Connect {
                addr: self.addr.clone(),
                source,
            };
            let con = self
                .client
                .get_connection_with_timeout(IO_TIMEOUT)
                .map_err(connect_err)?;
            con.set_write_timeout(Some(IO_TIMEOUT)).map_err(connect_err)?;
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("opened above"))
    }

    /// Runs `cmd`, waiting at most `wait` for its reply (more than a
    /// blocking command's own timeout).
    pub(crate) fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        wait: Duration,
        during: &str,
    ) -> Result<T, ClusterError> {
        let wait = wait.max(Duration::from_millis(1));
        let r = self.with_retry(|con| con.set_read_timeout(Some(wait)).and_then(|()| cmd.query::<T>(con)))?;
        self.settle(r, during)
    }

    /// Runs a pipeline (each reply in order).
    pub(crate) fn pipe<T: FromRedisValue>(&mut self, p: &Pipeline, during: &str) -> Result<T, ClusterError> {
        let r = self.with_retry(|con| con.set_read_timeout(Some(IO_TIMEOUT)).and_then(|()| p.query::<T>(con)))?;
        self.settle(r, during)
    }

    /// Runs `f` on the connection; when a connection opened earlier turns
    /// out to be closed (the server restarted, or dropped an idle client),
    /// once more on a new one. A server that closed the socket did not run
    /// what was written to it after, so sending it again is safe; a reply
    /// lost in the very moment a server dies is the at-least-once case the
    /// task ids and leases already cover.
    fn with_retry<T>(
        &mut self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<redis::RedisResult<T>, ClusterError> {
        let reused = self.con.is_some();
        let r = f(self.open()?);
        match r {
            Err(e) if reused && e.is_connection_dropped() && !e.is_timeout() => {
                self.con = None;
                Ok(f(self.open()?))
            }
            r => Ok(r),
        }
    }

    fn settle<T>(&mut self, r: redis::RedisResult<T>, during: &str) -> Result<T, ClusterError> {
        r.map_err(|e| {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.con = None;
            }
            if e.is_connection_refusal() {
                ClusterError::Connect {
                    addr: self.addr.clone(),
                    source: e,
                }
            } else {
                ClusterError::redis(during, e)
            }
        })
    }
}

/// Whether `e` says the server is away (refused, dropped, timed out, or
/// still loading its data after a restart): waiting may fix it, unlike an
/// error reply.
pub(crate) fn is_away(e: &ClusterError) -> bool {
    match e {
        ClusterError::Connect { .. } => true,
        ClusterError::Redis { source, .. } => {
            source.is_io_error()
                || source.is_connection_dropped()
                || source.is_timeout()
                || source.is_unrecoverable_error()
                || source.code() == Some("LOADING")
        }
        _ => false,
    }
}

/// One stream entry: its id and field-value pairs.
pub(crate) struct StreamEntry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StreamEntry {
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// The entries of an `XREAD`/`XREADGROUP` reply; nil (a timeout) is none. A malformed part is skipped.
pub(crate) fn stream_entries(v: &Value) -> Vec<StreamEntry> {
    let mut out = Vec::new();
    match v {
        // XREAD: [[key, [entries]]] (RESP2), or a map key -> entries (RESP3).
        Value::Array(streams) => {
            for s in streams {
                match s {
                    Value::Array(pair) if pair.len() == 2 && bytes(&pair[0]).is_some() => {
                        entries_into(&pair[1], &mut out)
                    }
                    _ => {}
                }
            }
        }
        Value::Map(streams) => {
            for (_, e) in streams {
                entries_into(e, &mut out);
            }
        }
        _ => {}
    }
    out
}

/// The entries of an `XRANGE` or `XCLAIM` reply.
pub(crate) fn range_entries(v: &Value) -> Vec<StreamEntry> {
    let mut out = Vec::new();
    entries_into(v, &mut out);
    out
}

fn entries_into(v: &Value, out: &mut Vec<StreamEntry>) {
    let Value::Array(entries) = v else { return };
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let [id, fields] = parts.as_slice() else { continue };
        let Some(id) = bytes(id).and_then(|b| String::from_utf8(b).ok()) else {
            continue;
        };
        let fields = match fields {
            Value::Array(f) => f
                .chunks(2)
                .filter_map(|kv| Some((bytes(kv.first()?)?, bytes(kv.get(1)?)?)))
                .collect(),
            _ => Vec::new(),
        };
        out.push(StreamEntry { id, fields });
    }
}
