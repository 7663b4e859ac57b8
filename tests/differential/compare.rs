//! Reply comparison: byte-identical lines and bodies, YAML compared on deterministic fields.

/// `stats-job` fields that depend on time or storage.
const IGNORED_JOB: &[&str] = &["age", "time-left", "file"];

/// `stats-tube` fields that depend on time.
const IGNORED_TUBE: &[&str] = &["pause-time-left"];

/// `stats` fields that depend on the process, the host, time or connection timing.
/// `current-connections` and `total-connections` count connections the server has
/// accepted, which can lag behind the client's `connect` and `close`.
const IGNORED_STATS: &[&str] = &[
    "pid",
    "version",
    "rusage-utime",
    "rusage-stime",
    "uptime",
    "id",
    "hostname",
    "os",
    "platform",
    "total-connections",
    "current-connections",
];

/// Whether known larder divergences are tolerated (the default) rather than reported.
/// `LARDER_DIFF_STRICT=1` turns every workaround marked KNOWN-DIVERGENCE off.
pub fn tolerate_known() -> bool {
    !std::env::var("LARDER_DIFF_STRICT").is_ok_and(|v| v == "1")
}

/// Whether larder's value `lv` differs from beanstalkd's `bv` for field `key`.
fn differs(_key: &str, bv: &str, lv: &str) -> bool {
    bv != lv
}

/// Compares one reply from beanstalkd (`bs`) with larder's (`ld`). `OK <n>` replies are
/// compared as YAML; everything else must be byte-identical.
pub fn replies(bs: &[u8], ld: &[u8]) -> Result<(), String> {
    if bs.starts_with(b"OK ") && ld.starts_with(b"OK ") {
        return yaml(bs, ld);
    }
    if bs == ld {
        Ok(())
    } else {
        Err("replies differ".to_owned())
    }
}

/// The body of an `OK <n>` reply, without the line and the final `\r\n`.
fn body(reply: &[u8]) -> &[u8] {
    let start = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |p| p + 2);
    let end = reply.len().saturating_sub(2).max(start);
    &reply[start..end]
}

fn yaml(bs: &[u8], ld: &[u8]) -> Result<(), String> {
    let (b, l) = (
        String::from_utf8_lossy(body(bs)).into_owned(),
        String::from_utf8_lossy(body(ld)).into_owned(),
    );
    let mut bl = b.split('\n').collect::<Vec<_>>();
    let mut ll = l.split('\n').collect::<Vec<_>>();
    // beanstalkd ends every YAML line with '\n', so the split leaves one empty tail.
    if bl.first() != Some(&"---") || bl.last() != Some(&"") {
        return Err("beanstalkd's YAML is not framed as expected (harness problem?)".to_owned());
    }
    if ll.first() != Some(&"---") || ll.last() != Some(&"") {
        return Err("larder's YAML does not start with \"---\\n\" and end with \"\\n\"".to_owned());
    }
    bl.remove(0);
    ll.remove(0);
    bl.pop();
    ll.pop();
    if bl.iter().all(|x| x.starts_with("- ")) && !bl.is_empty() {
        // A tube list: the order is arbitrary in beanstalkd; compare as multisets. The
        // announced length does not depend on order, so it must match too.
        let line = |r: &[u8]| r.split(|&c| c == b'\r').next().map(<[u8]>::to_vec);
        if line(bs) != line(ld) {
            return Err("list replies announce different lengths".to_owned());
        }
        bl.sort_unstable();
        ll.sort_unstable();
        return if bl == ll {
            Ok(())
        } else {
            Err("tube lists differ (compared as sets)".to_owned())
        };
    }
    let bk = pairs(&bl).ok_or("beanstalkd YAML line without \": \" (harness problem?)")?;
    let lk = pairs(&ll).ok_or("larder YAML line without \": \"")?;
    let has = |k: &str| bk.iter().any(|(key, _)| *key == k);
    if has("state") && has("id") {
        ordered(&bk, &lk, IGNORED_JOB, "stats-job")
    } else if has("name") {
        ordered(&bk, &lk, IGNORED_TUBE, "stats-tube")
    } else if has("pid") {
        // The same fields in the same order (protocol.md §5.1): larder's own come only
        // after `extended-stats`. The binlog-* values describe beanstalkd's log, not larder's.
        let mut ignored = IGNORED_STATS.to_vec();
        ignored.extend(
            bk.iter()
                .map(|(k, _)| *k)
                .filter(|k| k.starts_with("binlog-")),
        );
        ordered(&bk, &lk, &ignored, "stats")
    } else {
        Err("unrecognised YAML reply (harness problem?)".to_owned())
    }
}

fn pairs<'a>(lines: &[&'a str]) -> Option<Vec<(&'a str, &'a str)>> {
    lines.iter().map(|l| l.split_once(": ")).collect()
}

/// The same fields in the same order with the same values, apart from `ignored` ones
/// (which must still be present). larder adds fields of its own only for connections that
/// ask with `extended-stats` (protocol.md §7.5), which the generated scripts never send.
fn ordered(
    bk: &[(&str, &str)],
    lk: &[(&str, &str)],
    ignored: &[&str],
    what: &str,
) -> Result<(), String> {
    let keys = |v: &[(&str, &str)]| v.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    if keys(bk) != keys(lk) {
        return Err(format!(
            "{what}: fields differ: beanstalkd {:?}, larder {:?}",
            keys(bk),
            keys(lk)
        ));
    }
    for ((k, bv), (_, lv)) in bk.iter().zip(lk) {
        if !ignored.contains(k) && differs(k, bv, lv) {
            return Err(format!("{what}: {k}: beanstalkd {bv:?}, larder {lv:?}"));
        }
    }
    Ok(())
}
