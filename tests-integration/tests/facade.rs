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
    check::<std::io::Error>();
}
