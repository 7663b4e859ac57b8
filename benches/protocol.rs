//! Throughput of the wire protocol layer, in bytes per second: the server's command decoder
//! and reply encoder, and the client's command encoder and reply decoder.
//!
//! Each benchmark works on one buffer holding a mix of traffic a broker sees (puts with
//! 100-byte bodies, reserves, deletes, releases, small YAML replies), so the figures are
//! comparable between the four directions. No I/O.
//!
//! ```text
//! cargo bench --bench protocol -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use larder::protocol::{Command, CommandDecoder, JobId, Reply, ReplyDecoder, TubeName};
use tokio_util::codec::Decoder;

/// Rounds of the command mix in each buffer.
const ROUNDS: u64 = 1_000;

fn body() -> Bytes {
    Bytes::from(vec![b'x'; 100])
}

/// One round of a producer and a worker's traffic: the commands.
fn commands() -> Vec<Command> {
    let tube = TubeName::new(b"emails").expect("valid tube name");
    let mut out = Vec::new();
    for i in 0..ROUNDS {
        let id = JobId(1_000_000 + i);
        out.extend([
            Command::Use(tube.clone()),
            Command::Put {
                pri: 1024,
                delay: 0,
                ttr: 60,
                body: body(),
            },
            Command::ReserveWithTimeout(5),
            Command::Release {
                id,
                pri: 1024,
                delay: 10,
            },
            Command::Delete(id),
            Command::StatsJob(id),
        ]);
    }
    out
}

/// The replies to [`commands`].
fn replies() -> Vec<Reply> {
    let tube = TubeName::new(b"emails").expect("valid tube name");
    let yaml = Bytes::from_static(
        b"---\nid: 1000000\ntube: emails\nstate: ready\npri: 1024\nage: 3\ndelay: 0\n\
          ttr: 60\ntime-left: 0\nfile: 0\nreserves: 1\ntimeouts: 0\nreleases: 1\n\
          buries: 0\nkicks: 0\n",
    );
    let mut out = Vec::new();
    for i in 0..ROUNDS {
        let id = JobId(1_000_000 + i);
        out.extend([
            Reply::Using(tube.clone()),
            Reply::Inserted(id),
            Reply::Reserved {
                id,
                body: body().into(),
            },
            Reply::Released,
            Reply::Deleted,
            Reply::Ok(yaml.clone()),
        ]);
    }
    out
}

fn encode_commands(cmds: &[Command], dst: &mut BytesMut) {
    for c in cmds {
        c.encode(dst);
    }
}

fn encode_replies(replies: &[Reply], dst: &mut BytesMut) {
    for r in replies {
        // Every body here is in memory: there is no stored body's room to fill.
        let hole = r.encode(dst);
        assert!(hole.is_none(), "in-memory bodies leave no hole");
    }
}

fn protocol(c: &mut Criterion) {
    let cmds = commands();
    let mut wire = BytesMut::new();
    encode_commands(&cmds, &mut wire);
    let cmd_wire = wire.freeze();

    let reps = replies();
    let mut wire = BytesMut::new();
    encode_replies(&reps, &mut wire);
    let reply_wire = wire.freeze();

    let mut g = c.benchmark_group("protocol");

    g.throughput(Throughput::Bytes(cmd_wire.len() as u64));
    g.bench_function("decode commands (server)", |b| {
        let mut decoder = CommandDecoder::new(65_535);
        b.iter(|| {
            let mut src = BytesMut::from(&cmd_wire[..]);
            let mut n = 0usize;
            while let Some(item) = decoder.decode(&mut src).expect("no I/O error") {
                black_box(item.expect("well-formed"));
                n += 1;
            }
            assert_eq!(n, cmds.len());
        })
    });
    g.bench_function("encode commands (client)", |b| {
        let mut dst = BytesMut::with_capacity(cmd_wire.len());
        b.iter(|| {
            dst.clear();
            encode_commands(black_box(&cmds), &mut dst);
            assert_eq!(dst.len(), cmd_wire.len());
        })
    });

    g.throughput(Throughput::Bytes(reply_wire.len() as u64));
    g.bench_function("encode replies (server)", |b| {
        let mut dst = BytesMut::with_capacity(reply_wire.len());
        b.iter(|| {
            dst.clear();
            encode_replies(black_box(&reps), &mut dst);
            assert_eq!(dst.len(), reply_wire.len());
        })
    });
    g.bench_function("decode replies (client)", |b| {
        let mut decoder = ReplyDecoder::default();
        b.iter(|| {
            let mut src = BytesMut::from(&reply_wire[..]);
            let mut n = 0usize;
            while let Some(reply) = decoder.decode(&mut src).expect("well-formed replies") {
                black_box(reply);
                n += 1;
            }
            assert_eq!(n, reps.len());
        })
    });
    g.finish();
}

criterion_group!(benches, protocol);
criterion_main!(benches);
