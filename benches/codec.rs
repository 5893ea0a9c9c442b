//! Codec benchmarks: encoding and decoding small and 1 MiB values, beside a
//! memcpy baseline and the two serde formats the codec was chosen between.
//!
//! Run with `cargo xtask bench codec` (or `cargo bench -p benches --bench codec`).

use std::hint::black_box;
use std::os::fd::AsFd;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mp_codec::Frame;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
struct Small {
    id: u64,
    name: String,
    values: Vec<u32>,
    flag: bool,
}

fn small() -> Small {
    Small {
        id: 0x1234_5678,
        name: "ten chars!".into(),
        values: (0..8).collect(),
        flag: true,
    }
}

const MIB: usize = 1 << 20;

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_encode");
    let mut frame = Frame::new();
    g.bench_function("i64", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&0x1234_5678_9abc_i64), &mut frame))
    });
    let s = small();
    g.bench_function("small_struct", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&s), &mut frame))
    });
    // postcard alone into a slice: the floor under the codec's per-message cost.
    let mut slice = [0u8; 64];
    g.bench_function("baseline_postcard_to_slice_i64", |b| {
        b.iter(|| postcard::to_slice(black_box(&0x1234_5678_9abc_i64), &mut slice).map(|s| s.len()))
    });
    g.bench_function("baseline_postcard_to_slice_small_struct", |b| {
        b.iter(|| postcard::to_slice(black_box(&s), &mut slice).map(|s| s.len()))
    });
    let bytes: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let floats: Vec<f64> = (0..MIB / 8).map(|i| i as f64).collect();
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("vec_u8_1mib", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&bytes), &mut frame))
    });
    let marked = serde_bytes::ByteBuf::from(bytes.clone());
    g.bench_function("vec_u8_as_serde_bytes_1mib", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&marked), &mut frame))
    });
    g.bench_function("vec_f64_1mib", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&floats), &mut frame))
    });
    g.bench_function("raw_bytes_frame_1mib", |b| {
        b.iter(|| Frame::from_bytes(black_box(&bytes)))
    });
    let mut out = Vec::with_capacity(MIB);
    g.bench_function("baseline_memcpy_1mib", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&bytes));
        })
    });
    // The formats the codec chose between, on the same 1 MiB Vec<u8>.
    let mut pbuf = Vec::with_capacity(MIB + 16);
    g.bench_function("postcard_to_extend_vec_u8_1mib", |b| {
        b.iter(|| {
            pbuf.clear();
            pbuf = postcard::to_extend(black_box(&bytes), std::mem::take(&mut pbuf)).unwrap();
        })
    });
    let mut bbuf = Vec::with_capacity(MIB + 16);
    g.bench_function("bincode2_vec_u8_1mib", |b| {
        b.iter(|| {
            bbuf.clear();
            bincode::serde::encode_into_std_write(black_box(&bytes), &mut bbuf, bincode::config::standard()).unwrap()
        })
    });
    // A pool chunk's items: 12,500 u64 (x*x over a map of 100k), ours beside
    // postcard's own serializer.
    let squares: Vec<u64> = (0..12_500u64).map(|x| x * x).collect();
    g.throughput(Throughput::Elements(squares.len() as u64));
    g.bench_function("vec_u64_12500", |b| {
        b.iter(|| mp_codec::encode_into(black_box(&squares), &mut frame))
    });
    let mut pslice = vec![0u8; 12_500 * 10 + 16];
    g.bench_function("baseline_postcard_to_slice_vec_u64_12500", |b| {
        b.iter(|| postcard::to_slice(black_box(&squares), &mut pslice).map(|s| s.len()))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_decode");
    let i = wire(&0x1234_5678_9abc_i64);
    g.bench_function("i64", |b| {
        b.iter_batched(
            || rebuild(&i),
            |f| mp_codec::decode::<i64>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let s = wire(&small());
    g.bench_function("small_struct", |b| {
        b.iter_batched(
            || rebuild(&s),
            |f| mp_codec::decode::<Small>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Bytes(MIB as u64));
    let v = wire(&(0..MIB).map(|i| i as u8).collect::<Vec<u8>>());
    g.bench_function("vec_u8_1mib", |b| {
        b.iter_batched(
            || rebuild(&v),
            |f| mp_codec::decode::<Vec<u8>>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let m = wire(&serde_bytes::ByteBuf::from(
        (0..MIB).map(|i| i as u8).collect::<Vec<u8>>(),
    ));
    g.bench_function("vec_u8_as_serde_bytes_1mib", |b| {
        b.iter_batched(
            || rebuild(&m),
            |f| mp_codec::decode::<serde_bytes::ByteBuf>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let squares = wire(&(0..12_500u64).map(|x| x * x).collect::<Vec<u64>>());
    g.throughput(Throughput::Elements(12_500));
    g.bench_function("vec_u64_12500", |b| {
        b.iter_batched(
            || rebuild(&squares),
            |f| mp_codec::decode::<Vec<u64>>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let payload = &squares[mp_codec::HEADER_LEN..];
    g.bench_function("baseline_postcard_from_bytes_vec_u64_12500", |b| {
        b.iter(|| postcard::from_bytes::<Vec<u64>>(black_box(payload)).unwrap())
    });
    g.throughput(Throughput::Bytes(MIB as u64));
    let f = wire(&(0..MIB / 8).map(|i| i as f64).collect::<Vec<f64>>());
    g.bench_function("vec_f64_1mib", |b| {
        b.iter_batched(
            || rebuild(&f),
            |f| mp_codec::decode::<Vec<f64>>(f).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A frame rebuilt from its wire bytes for every decode (decode consumes it);
/// the rebuild runs outside the timed part.
fn rebuild(bytes: &[u8]) -> Frame {
    Frame::from_wire(bytes.to_vec(), Vec::new(), &Default::default()).unwrap()
}

/// The wire bytes of `v`'s frame.
fn wire<T: Serialize>(v: &T) -> Vec<u8> {
    mp_codec::encode(v).unwrap().into_parts().0
}

fn socket_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_socket");
    let (a, b) = mp_sys::socket::socketpair(mp_sys::socket::SocketKind::Stream).unwrap();
    for size in [8usize, 4096, MIB] {
        let payload = vec![7u8; size];
        let frame = Frame::from_bytes(&payload).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("send_recv_same_thread", size), &frame, |bch, frame| {
            bch.iter(|| {
                // A frame larger than the socket buffer needs a reader beside
                // the writer; small ones fit.
                if size > 64 * 1024 {
                    std::thread::scope(|s| {
                        s.spawn(|| mp_codec::send_frame(a.as_fd(), frame).unwrap());
                        mp_codec::recv_frame(b.as_fd(), &Default::default()).unwrap()
                    })
                } else {
                    mp_codec::send_frame(a.as_fd(), frame).unwrap();
                    mp_codec::recv_frame(b.as_fd(), &Default::default()).unwrap()
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode, socket_round_trip);
criterion_main!(benches);
