//! The command decoder's tests: each command's quirks, and the round trip through the
//! encoder however the bytes are split.

use super::*;
use crate::protocol::{
    BuryReason, Command, CommandKind, DeadFilter, JobId, ProtocolError, TubeName, TubeSetting,
};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Decodes everything in `input`, fed in pieces of the given sizes.
fn decode_all(input: &[u8], pieces: &[usize], max: u32) -> Vec<Result<Command, ProtocolError>> {
    let mut dec = CommandDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = pieces.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = dec.decode(&mut buf).expect("decode never fails") {
            out.push(item);
        }
    }
    out
}

fn one(line: &str) -> Result<Command, ProtocolError> {
    let items = decode_all(line.as_bytes(), &[usize::MAX], 65_535);
    assert_eq!(items.len(), 1, "{line:?} gave {items:?}");
    items.into_iter().next().expect("one item")
}

#[test]
fn parses_each_command_and_its_quirks() {
    let t = |s: &str| TubeName::new(s.as_bytes()).expect("tube");
    assert_eq!(
        one("reserve-with-timeout 5 junk\r\n"),
        Ok(Command::ReserveWithTimeout(5))
    );
    assert_eq!(
        one("reserve-with-timeout x\r\n"),
        Ok(Command::ReserveWithTimeout(0))
    );
    assert_eq!(
        one("reserve-with-timeout -1\r\n"),
        Ok(Command::ReserveWithTimeout(u32::MAX))
    );
    assert_eq!(
        one("reserve-with-timeout 4294967296\r\n"),
        Ok(Command::ReserveWithTimeout(0))
    );
    assert_eq!(
        one("reserve-with-timeout 99999999999999999999\r\n"),
        Err(ProtocolError::BadFormat)
    );
    assert_eq!(one("kick -1\r\n"), Ok(Command::Kick(u32::MAX)));
    assert_eq!(one("kick 4294967297\r\n"), Ok(Command::Kick(1)));
    assert_eq!(
        one("pause-tubedefault 3\r\n"),
        Ok(Command::PauseTube {
            tube: t("default"),
            delay: 3
        })
    );
    assert_eq!(
        one("pause-tube  a 0\r\n"),
        Ok(Command::PauseTube {
            tube: t("a"),
            delay: 0
        })
    );
    assert_eq!(
        one("pause-tube -a 0\r\n"),
        Err(ProtocolError::CountedBadFormat(CommandKind::PauseTube))
    );
    assert_eq!(one("pause-tube a\r\n"), Err(ProtocolError::BadFormat));
    assert_eq!(one("quit now\r\n"), Ok(Command::Quit));
    assert_eq!(
        one("put 0 0 1 1 x\r\n"),
        Err(ProtocolError::CountedBadFormat(CommandKind::Put))
    );
    assert_eq!(
        one("release 1 2 3\r\n"),
        Ok(Command::Release {
            id: JobId(1),
            pri: 2,
            delay: 3
        })
    );
}

#[test]
fn a_body_over_the_limit_is_skipped_not_buffered() {
    let mut dec = CommandDecoder::new(10);
    let mut buf = BytesMut::from(&b"put 0 0 1 4000000000\r\n"[..]);
    assert_eq!(dec.decode(&mut buf).expect("ok"), None);
    for _ in 0..100 {
        buf.extend_from_slice(&[b'x'; 4096]);
        assert_eq!(dec.decode(&mut buf).expect("ok"), None);
        assert!(buf.is_empty(), "skipped bytes must not accumulate");
    }
}

fn command() -> impl Strategy<Value = Command> {
    let id = any::<u64>().prop_map(JobId);
    let name = "[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}"
        .prop_map(|s| TubeName::new(s.as_bytes()).expect("valid by construction"));
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(pri, delay, ttr, body)| Command::Put {
                pri,
                delay,
                ttr,
                body: body.into()
            }),
        name.clone().prop_map(Command::Use),
        Just(Command::Reserve),
        any::<u32>().prop_map(Command::ReserveWithTimeout),
        id.clone().prop_map(Command::ReserveJob),
        id.clone().prop_map(Command::Delete),
        (id.clone(), any::<u32>(), any::<u32>()).prop_map(|(id, pri, delay)| Command::Release {
            id,
            pri,
            delay
        }),
        (id.clone(), any::<u32>()).prop_map(|(id, pri)| Command::Bury { id, pri }),
        id.clone().prop_map(Command::Touch),
        name.clone().prop_map(Command::Watch),
        name.clone().prop_map(Command::Ignore),
        id.clone().prop_map(Command::Peek),
        Just(Command::PeekReady),
        Just(Command::PeekDelayed),
        Just(Command::PeekBuried),
        any::<u32>().prop_map(Command::Kick),
        id.clone().prop_map(Command::KickJob),
        id.prop_map(Command::StatsJob),
        name.clone().prop_map(Command::StatsTube),
        Just(Command::Stats),
        Just(Command::ListTubes),
        Just(Command::ListTubeUsed),
        Just(Command::ListTubesWatched),
        (name, any::<u32>()).prop_map(|(tube, delay)| Command::PauseTube { tube, delay }),
        Just(Command::Quit),
        // Short names: the whole line must fit in MAX_LINE_LEN.
        (
            "[a-z][a-z0-9-]{0,150}".prop_map(|s| TubeName::new(s.as_bytes()).expect("valid")),
            prop::sample::select(TubeSetting::ALL.to_vec()),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(tube, setting, raw, reset)| {
                let value = setting_value(setting, raw);
                Command::ConfigTube {
                    tube,
                    setting,
                    value: (!reset).then_some(value),
                }
            }),
        (any::<u64>(), "[ -~]{0,150}").prop_map(|(id, message)| Command::Fail {
            id: JobId(id),
            message
        }),
        (dead_filter(), any::<u32>(), 0..3u8).prop_map(|(filter, limit, which)| match which {
            0 => Command::ListDead { filter, limit },
            1 => Command::KickDead { filter, limit },
            _ => Command::DeleteDead { filter, limit },
        }),
        "[!-~]{1,150}".prop_map(|t| Command::Auth(crate::protocol::Token(t.into()))),
        (1..u64::MAX, any::<[u8; 4]>(), any::<u16>()).prop_map(|(id, ip, port)| {
            Command::ClusterAdd {
                id,
                addr: std::net::SocketAddr::from((ip, port)),
            }
        }),
        (1..u64::MAX).prop_map(Command::ClusterRemove),
    ]
}

#[test]
fn the_cluster_commands_parse_strictly() {
    assert_eq!(
        one("cluster-add 4 127.0.0.1:11314\r\n"),
        Ok(Command::ClusterAdd {
            id: 4,
            addr: "127.0.0.1:11314".parse().expect("addr")
        })
    );
    assert_eq!(one("cluster-remove 2\r\n"), Ok(Command::ClusterRemove(2)));
    for bad in [
        "cluster-add 0 127.0.0.1:1\r\n",
        "cluster-add 4\r\n",
        "cluster-add 4 localhost:11314\r\n",
        "cluster-add 4 127.0.0.1\r\n",
        "cluster-add 4  127.0.0.1:1\r\n",
        "cluster-add x 127.0.0.1:1\r\n",
        "cluster-remove 0\r\n",
        "cluster-remove 2 3\r\n",
    ] {
        assert_eq!(one(bad), Err(ProtocolError::BadFormat), "{bad:?}");
    }
    // Without its space and arguments, like every command that takes some.
    assert_eq!(
        one("cluster-remove\r\n"),
        Err(ProtocolError::UnknownCommand)
    );
}

/// A valid value of `setting` derived from `raw`.
fn setting_value(setting: TubeSetting, raw: u64) -> u64 {
    match setting.unit() {
        crate::protocol::Unit::Count { max } => max.checked_add(1).map_or(raw, |m| raw % m),
        crate::protocol::Unit::Millis => raw % (crate::protocol::MAX_MILLIS + 1),
        crate::protocol::Unit::Thousandths { min, max } => min + raw % (max - min + 1),
    }
}

fn dead_filter() -> impl Strategy<Value = DeadFilter> {
    (
        prop::option::of("[a-z][a-z0-9-]{0,100}"),
        prop::option::of(prop::sample::select(BuryReason::ALL.to_vec())),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(tube, reason, older_than_ms, from, to)| DeadFilter {
            tube: tube.map(|t| TubeName::new(t.as_bytes()).expect("valid")),
            reason,
            older_than_ms,
            from: JobId(from),
            to: JobId(to),
        })
}

#[test]
fn fail_and_the_dead_letter_commands_parse_strictly() {
    assert_eq!(
        one("fail 7 disk full: /var\r\n"),
        Ok(Command::Fail {
            id: JobId(7),
            message: "disk full: /var".into()
        })
    );
    assert_eq!(
        one("fail 7\r\n"),
        Ok(Command::Fail {
            id: JobId(7),
            message: String::new()
        })
    );
    assert_eq!(one("fail x\r\n"), Err(ProtocolError::BadFormat));
    assert_eq!(one("fail 7x\r\n"), Err(ProtocolError::BadFormat));
    assert_eq!(
        decode_all(b"fail 7 \xff\r\n", &[usize::MAX], 10),
        [Err(ProtocolError::BadFormat)]
    );
    let mut filter = DeadFilter::all();
    filter.reason = Some(BuryReason::MaxAttempts);
    filter.older_than_ms = 5000;
    assert_eq!(
        one("list-dead * max-attempts 5000 0 18446744073709551615 10\r\n"),
        Ok(Command::ListDead { filter, limit: 10 })
    );
    for bad in [
        "list-dead * * 0 0 1\r\n",
        "list-dead * * 0 0 1 1 1\r\n",
        "list-dead * nosuch 0 0 1 1\r\n",
        "list-dead * * -1 0 1 1\r\n",
        "list-dead * *  0 0 1 1\r\n",
        "kick-dead -x * 0 0 1 1\r\n",
        "delete-dead * * 0 0 1 4294967296\r\n",
    ] {
        assert_eq!(one(bad), Err(ProtocolError::BadFormat), "{bad:?}");
    }
}

#[test]
fn config_tube_refuses_unknown_settings_and_bad_values() {
    let t = |s: &str| TubeName::new(s.as_bytes()).expect("tube");
    assert_eq!(
        one("config-tube jobs max-attempts 3\r\n"),
        Ok(Command::ConfigTube {
            tube: t("jobs"),
            setting: TubeSetting::MaxAttempts,
            value: Some(3)
        })
    );
    assert_eq!(
        one("config-tube jobs retry-backoff default\r\n"),
        Ok(Command::ConfigTube {
            tube: t("jobs"),
            setting: TubeSetting::RetryBackoff,
            value: None
        })
    );
    assert_eq!(
        one("config-tube jobs colour 3\r\n"),
        Err(ProtocolError::UnknownSetting)
    );
    for bad in [
        "config-tube jobs max-attempts x\r\n",
        "config-tube jobs max-attempts -1\r\n",
        "config-tube jobs max-attempts 3 \r\n",
        "config-tube jobs  max-attempts 3\r\n",
        "config-tube jobs max-attempts\r\n",
        "config-tube -jobs max-attempts 3\r\n",
        "config-tube jobs retry-jitter 1.5\r\n",
        "config-tube jobs retry-backoff 0.9\r\n",
    ] {
        assert_eq!(one(bad), Err(ProtocolError::BadFormat), "{bad:?}");
    }
    assert_eq!(one("config-tube\r\n"), Err(ProtocolError::UnknownCommand));
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(cmds in prop::collection::vec(command(), 1..20), pieces in prop::collection::vec(1..50usize, 1..8)) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            c.encode(&mut wire);
        }
        let got = decode_all(&wire, &pieces, u32::MAX);
        let want: Vec<_> = cmds.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_decode_the_same_however_they_are_split(input in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b' ')], 0..600), pieces in prop::collection::vec(1..300usize, 1..8)) {
        let whole = decode_all(&input, &[usize::MAX], 40);
        let split = decode_all(&input, &pieces, 40);
        prop_assert_eq!(whole, split);
    }
}
