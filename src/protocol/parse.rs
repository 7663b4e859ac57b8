//! The parsing primitives both decoders share: finding a line's end, and reading numbers
//! the way beanstalkd's C code does. Everything that walks over the bytes of a line lives
//! here, so the command and reply decoders only say what a line means.

/// Position of the first `\r\n` in `buf`, if any.
pub(super) fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = buf
        .get(from..)
        .and_then(|b| b.iter().position(|&c| c == b'\n'))
    {
        let nl = from + off;
        if nl > 0 && buf[nl - 1] == b'\r' {
            return Some(nl - 1);
        }
        from = nl + 1;
    }
    None
}

pub(super) fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// Reads an unsigned decimal after optional spaces, like beanstalkd's `read_u64`: at least
/// one digit, no sign, no overflow. Returns the value and the bytes after its digits.
pub(super) fn read_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = skip_spaces(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, &s[digits..]))
}

pub(super) fn read_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = read_u64(s)?;
    Some((u32::try_from(n).ok()?, rest))
}

pub(super) fn read_u64_all(s: &[u8]) -> Option<u64> {
    match read_u64(s)? {
        (n, []) => Some(n),
        _ => None,
    }
}

pub(super) fn read_u32_all(s: &[u8]) -> Option<u32> {
    match read_u32(s)? {
        (n, []) => Some(n),
        _ => None,
    }
}

/// The parts of a C `strtol`/`strtoul` conversion: leading whitespace, an optional sign,
/// then digits (bytes after them are ignored). Returns the sign, the magnitude (`None` if
/// it overflows 64 bits) and whether any digit was seen.
fn c_number(s: &[u8]) -> (bool, Option<u64>, bool) {
    let ws = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .count();
    let mut s = &s[ws..];
    let negative = s.first() == Some(&b'-');
    if matches!(s.first(), Some(b'-' | b'+')) {
        s = &s[1..];
    }
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut n: Option<u64> = Some(0);
    for &d in &s[..digits] {
        n = n
            .and_then(|n| n.checked_mul(10))
            .and_then(|n| n.checked_add(u64::from(d - b'0')));
    }
    (negative, n, digits > 0)
}

/// C's `strtoul(s, &end, 10)` on a 64-bit platform, as beanstalkd uses for `kick`: a minus
/// sign negates modulo 2^64. `None` when there are no digits or the value overflows.
pub(super) fn strtoul(s: &[u8]) -> Option<u64> {
    match c_number(s) {
        (_, _, false) | (_, None, _) => None,
        (negative, Some(n), true) => Some(if negative { n.wrapping_neg() } else { n }),
    }
}

/// C's `strtol(s, &end, 10)` on a 64-bit platform, as beanstalkd 1.12 uses for
/// `reserve-with-timeout`: no digits gives 0; `None` only when the value overflows.
pub(super) fn strtol(s: &[u8]) -> Option<i64> {
    match c_number(s) {
        (_, _, false) => Some(0),
        (false, Some(n), true) => i64::try_from(n).ok(),
        (true, Some(n), true) if n <= 1 << 63 => Some((n as i64).wrapping_neg()),
        _ => None,
    }
}
