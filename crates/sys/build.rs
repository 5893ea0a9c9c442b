//! Makes the secret key that [`code::Entry`] tags are computed with.
//!
//! An entry names a function by its offset in the binary; its tag proves the
//! offset was computed by this library for this binary. The key is random,
//! made once per build of this crate, and private to it, so code outside
//! mp-sys cannot compute a valid tag for an address of its choosing.

use std::io::Read;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let mut key = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if random.is_err() {
        // No kernel randomness at build time (not Linux): fall back to the
        // clock and the process id, which still differ from build to build.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        key = (now ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let (a, b) = key.split_at(8);
    let k0 = u64::from_le_bytes(a.try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("entry_key.rs"),
        format!("/// The build's secret key for entry tags (see build.rs).\nconst ENTRY_KEY: (u64, u64) = ({k0:#x}, {k1:#x});\n"),
    )
    .expect("write OUT_DIR/entry_key.rs");
}
