//! The broker's cluster mode in process, without openraft: nothing runs before it opens as
//! leader, replies wait for their entry to be applied, stepping down rebuilds the state from
//! the committed entries only, and an entry proposed in an older term is applied as empty.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::FutureExt;
use openraft::{CommittedLeaderId, EntryPayload, LeaderId};
use tokio::sync::mpsc;

use super::{Entry, LogId, Proposal};
use crate::engine::{Engine, EngineConfig, ProcessInfo};
use crate::protocol::{Command, JobId, ProtocolError};
use crate::server::broker::{Batch, Located};
use crate::server::outbox::Outbox;
use crate::server::{Broker, Clock};
use crate::wal::{Lsn, RecordPos};

fn broker() -> (Arc<Broker>, mpsc::UnboundedReceiver<Batch>) {
    let clock = Clock::new();
    let engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), clock.now());
    let journal = Arc::new(crate::server::journal::Journal::new(
        1,
        crate::wal::Layout::empty(1, 1 << 20),
    ));
    let files = Arc::new(crate::server::body_reader::SegmentFiles::new(
        std::env::temp_dir(),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let fresh = Box::new(|now| Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now));
    (
        Arc::new(Broker::clustered(
            engine, clock, journal, files, tx, fresh, None,
        )),
        rx,
    )
}

fn put(body: &[u8]) -> Result<Command, ProtocolError> {
    Ok(Command::Put {
        pri: 0,
        delay: 0,
        ttr: 60,
        body: bytes::Bytes::copy_from_slice(body),
    })
}

/// Runs `items` for `sid`; the replies are in the returned outbox.
fn run(
    broker: &Broker,
    sid: crate::engine::SessionId,
    items: Vec<Result<Command, ProtocolError>>,
) -> Outbox {
    let mut items: VecDeque<_> = items.into();
    let mut out = Outbox::new(None);
    broker.execute(sid, &mut items, out.replies(), usize::MAX);
    out
}

/// Whether `out`'s replies still wait for a proposal to be committed.
fn held(out: &mut Outbox, broker: &Broker) -> bool {
    out.replies().lsn().0 > broker.watermark().durable()
}

/// The replies' bytes, once they are released (`None` while held).
fn written(out: &mut Outbox, broker: &Broker) -> Option<String> {
    if held(out, broker) {
        return None;
    }
    let mut got = Vec::new();
    let done = out.write(&mut got, broker).now_or_never();
    done.map(|r| {
        r.expect("write");
        String::from_utf8_lossy(&got).into_owned()
    })
}

fn entry(term: u64, index: u64, batch: &Batch) -> Located {
    let (opening, seq, records) = batch;
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Proposal {
            term: opening.leader.term,
            opening: opening.opening,
            leader_time: 0,
            last_seq: *seq,
            records: bytes::Bytes::copy_from_slice(records),
        }),
    };
    let at = (
        Lsn(index),
        RecordPos {
            segment: 1,
            offset: 100 * index,
        },
    );
    (entry, at)
}

fn apply(broker: &Broker, (entry, at): &Located) {
    let EntryPayload::Normal(p) = &entry.payload else {
        panic!("not a normal entry");
    };
    broker.apply_entry(entry.log_id, p, *at).expect("apply");
}

fn jobs(broker: &Broker) -> usize {
    broker.with_engine(|e| e.job_count())
}

#[tokio::test]
async fn replies_wait_for_commit_and_stepping_down_keeps_only_committed_changes() {
    let (broker, mut batches) = broker();
    let (sid, _wakeups) = broker.open_session();

    // Not leader: told so at once, nothing proposed.
    let mut out = run(&broker, sid, vec![put(b"early")]);
    assert_eq!(written(&mut out, &broker).as_deref(), Some("NO_QUORUM\r\n"));
    assert!(batches.try_recv().is_err());
    assert_eq!(jobs(&broker), 0);

    // Leader in term 1: the put runs, its batch is proposed, its reply waits.
    broker.open_leader(LeaderId::new(1, 1));
    let mut out = run(&broker, sid, vec![put(b"one")]);
    let first = batches.try_recv().expect("a batch");
    assert_eq!(first.1, 1, "the first proposal's sequence number");
    assert_eq!(written(&mut out, &broker), None, "replied before commit");
    // Applied (so committed): the reply goes.
    let committed = entry(1, 1, &first);
    apply(&broker, &committed);
    assert_eq!(
        written(&mut out, &broker).as_deref(),
        Some("INSERTED 1\r\n")
    );

    // A second put is proposed but never committed.
    let mut out = run(&broker, sid, vec![put(b"two")]);
    let second = batches.try_recv().expect("a batch");
    assert_eq!(second.1, 2);
    assert_eq!(jobs(&broker), 2);
    assert_eq!(written(&mut out, &broker), None);

    // Deposed: the engine is rebuilt from the committed entries, clients are to be closed.
    broker
        .step_down(
            |_, _| Ok(0),
            |from, to| {
                Ok((from..to)
                    .filter(|&i| i == 1)
                    .map(|_| committed.clone())
                    .collect())
            },
        )
        .expect("step down");
    assert!(
        broker.deposed().now_or_never().is_some(),
        "listener not told"
    );
    assert_eq!(jobs(&broker), 1, "the uncommitted put survived the rebuild");
    assert!(broker.with_engine(|e| e.job(JobId(1)).is_some()));
    let (sid, _wakeups) = broker.open_session();
    let mut out = run(&broker, sid, vec![put(b"late")]);
    assert_eq!(written(&mut out, &broker).as_deref(), Some("NO_QUORUM\r\n"));

    // The old term's second batch reaches the log in term 2 after all: applied as empty.
    apply(&broker, &entry(2, 2, &second));
    assert_eq!(jobs(&broker), 1, "a stale proposal was applied");

    // Leading again (term 3): sequence numbers go on, and the never-confirmed id 2 is
    // given out again.
    broker.open_leader(LeaderId::new(3, 1));
    let mut out = run(&broker, sid, vec![put(b"three")]);
    let third = batches.try_recv().expect("a batch");
    assert_eq!(third.1, 3);
    assert_eq!(written(&mut out, &broker), None);
    apply(&broker, &entry(3, 3, &third));
    assert_eq!(
        written(&mut out, &broker).as_deref(),
        Some("INSERTED 2\r\n")
    );
}
