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
fn facade_re_exports_sync() {
    use multiprocessing::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, SyncError};
    let lock: mp_sync::Lock = Lock::new().unwrap();
    let cond: mp_sync::Condition = Condition::new(Some(lock.clone())).unwrap();
    drop(cond.acquire().unwrap());
    let _: mp_sync::RLock = RLock::new().unwrap();
    let _: mp_sync::Semaphore = Semaphore::new(1).unwrap();
    let _: mp_sync::BoundedSemaphore = BoundedSemaphore::new(1).unwrap();
    let _: mp_sync::Event = Event::new().unwrap();
    let b: mp_sync::Barrier = Barrier::new(1).unwrap();
    assert_eq!(b.wait().unwrap(), 0);
    let e: multiprocessing::sync::SyncError = SyncError::WrongGuard;
    fn check<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    check(&e);
    let _: Option<multiprocessing::LockGuard> = lock.try_acquire().unwrap();
}

#[test]
fn facade_re_exports_shared() {
    use multiprocessing::{Array, RawArray, RawValue, ShareableList, SharedError, SharedMemory, Value};
    let v: mp_shared::Value<f64> = Value::new(1.0).unwrap();
    assert_eq!(v.get(), 1.0);
    let a: mp_shared::Array<i32> = Array::new(2).unwrap();
    assert_eq!(a.len(), 2);
    let _: mp_shared::RawValue<u8> = RawValue::new(1).unwrap();
    let _: mp_shared::RawArray<u8> = RawArray::new(1).unwrap();
    let shm: mp_shared::SharedMemory = SharedMemory::create(None, 8).unwrap();
    let list: mp_shared::ShareableList<u8> = ShareableList::create(&[1], None).unwrap();
    shm.unlink().unwrap();
    list.shm().unlink().unwrap();
    let e: multiprocessing::shared::SharedError = SharedError::Closed("x".into());
    fn check<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    check(&e);
    fn pod<T: multiprocessing::Pod + multiprocessing::Zeroable>() {}
    pod::<f64>();
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
