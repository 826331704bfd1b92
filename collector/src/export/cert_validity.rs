//! The validity period (notBefore, notAfter) of an X.509 certificate, read straight from its
//! DER, so kotel can refuse its own expired client certificate at startup with a clear
//! message instead of letting every handshake fail later.
//!
//! Only the few fields before `validity` are walked (RFC 5280 §4.1); anything unexpected gives
//! `None`, and the caller then simply skips the check.

/// Seconds since the Unix epoch of a certificate's notBefore and notAfter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// The validity of a DER certificate, or `None` when it cannot be read.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (tag, certificate, _) = element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    // version [0] EXPLICIT, optional.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name.
    for expected in [0x02, 0x30, 0x30] {
        let (tag, _, after) = element(rest)?;
        if tag != expected {
            return None;
        }
        rest = after;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag_before, before, after) = element(validity)?;
    let (tag_after, not_after, _) = element(after)?;
    Some(Validity {
        not_before: time(tag_before, before)?,
        not_after: time(tag_after, not_after)?,
    })
}

/// One DER element: (tag, contents, what follows it).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

/// UTCTime (tag 0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`) as Unix
/// seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x18, b"20261127145000Z"), Some(1_795_791_000));
        assert_eq!(time(0x18, b"2026112714500Z"), None);
        assert_eq!(time(0x17, b"701301000000Z"), None);
    }

    #[test]
    fn a_hand_built_certificate_shape_is_read() {
        // SEQ { SEQ { [0]{INT 2}, INT 1, SEQ{}, SEQ{}, SEQ { UTCTime, GeneralizedTime } } }
        let before = b"700101000000Z";
        let after = b"20261127145000Z";
        let mut period = vec![0x17, before.len() as u8];
        period.extend_from_slice(before);
        period.extend_from_slice(&[0x18, after.len() as u8]);
        period.extend_from_slice(after);
        let mut tbs = vec![0xa0, 3, 0x02, 1, 2, 0x02, 1, 1, 0x30, 0, 0x30, 0];
        tbs.extend_from_slice(&[0x30, period.len() as u8]);
        tbs.extend_from_slice(&period);
        let mut cert = vec![0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        let mut der = vec![0x30, cert.len() as u8];
        der.extend_from_slice(&cert);
        assert_eq!(
            validity(&der),
            Some(Validity {
                not_before: 0,
                not_after: 1_795_791_000
            })
        );
        assert_eq!(validity(&der[..der.len() - 3]), None);
        assert_eq!(validity(&[]), None);
    }
}
