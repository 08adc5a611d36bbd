//! The last end-height record of CometBFT's consensus WAL (v0.38 `consensus/wal.go`: records of
//! CRC-32C ‖ length ‖ protobuf `TimedWALMessage`, in the head file and older `head.NNN` ones).

use std::path::Path;

#[derive(Clone, PartialEq, prost::Message)]
struct TimedWalMessage {
    #[prost(message, optional, tag = "2")]
    msg: Option<WalMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WalMessage {
    #[prost(message, optional, tag = "4")]
    end_height: Option<EndHeight>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EndHeight {
    #[prost(int64, tag = "1")]
    height: i64,
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The last end height in one WAL file; stops at the first damaged record (a crash's torn
/// write at the end is normal).
fn last_in(bytes: &[u8]) -> Option<u64> {
    use prost::Message as _;
    let mut last = None;
    let mut rest = bytes;
    while rest.len() >= 8 {
        let crc = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let Some(data) = rest.get(8..8 + len) else {
            break;
        };
        if crc32c(data) != crc {
            break;
        }
        if let Ok(m) = TimedWalMessage::decode(data)
            && let Some(e) = m.msg.and_then(|m| m.end_height)
            && let Ok(h) = u64::try_from(e.height)
        {
            last = Some(h);
        }
        rest = &rest[8 + len..];
    }
    last
}

/// The newest end height in the WAL directory `dir` whose head file is `head`.
pub(super) fn end_height(dir: &Path, head: &str) -> Option<u64> {
    if let Some(h) = std::fs::read(dir.join(head)).ok().and_then(|b| last_in(&b)) {
        return Some(h);
    }
    // Right after a rotation the head holds none yet: the newest rotated file does.
    let mut rotated: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(head)?.strip_prefix('.')?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort();
    rotated
        .iter()
        .rev()
        .find_map(|(_, p)| std::fs::read(p).ok().and_then(|b| last_in(&b)))
}

#[cfg(test)]
pub(super) fn record_end_height(h: i64) -> Vec<u8> {
    use prost::Message as _;
    let data = TimedWalMessage {
        msg: Some(WalMessage {
            end_height: Some(EndHeight { height: h }),
        }),
    }
    .encode_to_vec();
    let mut out = crc32c(&data).to_be_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_wal_end_height_is_the_newest_intact_record() {
        let mut b = record_end_height(3);
        b.extend(record_end_height(4));
        assert_eq!(last_in(&b), Some(4));
        let mut bad = record_end_height(5);
        bad[0] ^= 1; // bad CRC: stop before it
        b.extend(bad);
        assert_eq!(last_in(&b), Some(4));
        assert_eq!(last_in(b""), None);
        // Known CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // After a rotation: the head has no end height yet, the newest rotated file has.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("wal.000"), record_end_height(8)).unwrap();
        std::fs::write(d.path().join("wal.001"), record_end_height(9)).unwrap();
        std::fs::write(d.path().join("wal"), b"").unwrap();
        assert_eq!(end_height(d.path(), "wal"), Some(9));
    }
}
