//! Each re-export of the facade is reachable and is the sub-crate's item.

use multiprocessing::codec::{self, CodecError, Frame};
use multiprocessing::sys::region::Region;

#[test]
fn facade_re_exports_the_sub_crates() {
    let r: mp_sys::region::Region = Region::create("facade", 8).unwrap();
    let f: mp_codec::Frame = codec::encode(&1u8).unwrap();
    let _: &Frame = &f;
    let e: mp_codec::CodecError = CodecError::Eof;
    let top: multiprocessing::CodecError = e;
    assert!(top.is_eof());
    drop(r);
}

#[test]
fn public_errors_are_send_sync_static() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<CodecError>();
    check::<multiprocessing::ConnectionError>();
    check::<std::io::Error>();
}

#[test]
fn facade_re_exports_connections() {
    use multiprocessing::*;
    use std::time::Duration;
    let (a, b): (Connection, mp_connection::Connection) = pipe().unwrap();
    let (r, w) = pipe_simplex().unwrap();
    a.send(&"via the facade").unwrap();
    w.send_bytes(b"x").unwrap();
    let ready = connection::wait(&[&b as &dyn Waitable, &r], Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ready, vec![0, 1]);
    assert_eq!(b.recv::<String>().unwrap(), "via the facade");
    let l: Listener = Listener::bind("127.0.0.1:0", Some(b"k")).unwrap();
    let addr = l.address();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"k")).map(|c| c.send(&1u8)));
    let c = l.accept_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(c.recv::<u8>().unwrap(), 1);
    t.join().unwrap().unwrap().unwrap();
    let e: ConnectionError = mp_connection::ConnectionError::Eof;
    assert!(e.is_eof());
}
