//! Property tests: a state file cut short or garbled anywhere is read or refused with a
//! message, never a panic; what is written reads back the same.

use std::sync::Arc;

use futures::FutureExt;
use pipeline_sink::UploadJournal;
use pipeline_sink::encoder::BodyKeys;
use proptest::prelude::*;

use pipeline_spec::IdentifierSet;

use crate::{Entry, JournalWriter, Snapshot, read_journal};

/// A snapshot of `n` contacts, some refused, written to a file; its bytes.
fn snapshot_bytes(dir: &std::path::Path, n: u64) -> Vec<u8> {
    let mut s = Snapshot::default();
    for i in 0..n {
        s.entries.insert(
            format!("c{i}@example.com"),
            Entry {
                hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                lists: "l1".into(),
                synced_at: 1_700_000_000,
                refused: (i % 3 == 0).then(|| Arc::from("bounced")),
                identifiers: IdentifierSet::default(),
            },
        );
    }
    let path = dir.join("snapshot.parquet");
    s.save(&path).unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    // Each case writes Parquet: fewer than the default 256, unless PROPTEST_CASES asks.
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 48 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_damaged_snapshot_is_read_or_refused_without_panicking(
        n in 1u64..50,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = snapshot_bytes(dir.path(), n);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let path = dir.path().join("damaged.parquet");
        std::fs::write(&path, &bytes).unwrap();
        let _ = Snapshot::load(&path);
    }

    #[test]
    fn a_damaged_journal_is_read_or_refused_without_panicking(
        emails in proptest::collection::vec("\\PC{1,30}", 1..10),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let writer = JournalWriter::open(&path, None).unwrap();
        let mut keys = BodyKeys::default();
        for (i, e) in emails.iter().enumerate() {
            keys.push(e, i as u64, IdentifierSet::from_bits(1));
        }
        writer.accepted("job-1", &["l1".into()], &keys).now_or_never().unwrap().unwrap();
        writer.accepted("job-2", &["l1".into()], &keys).now_or_never().unwrap().unwrap();
        drop(writer);
        let read = read_journal(&path).unwrap();
        prop_assert_eq!(read.len(), 2);
        let back: Vec<&str> = read[0].entries().map(|(e, _, _)| e).collect();
        prop_assert_eq!(back, emails.iter().map(String::as_str).collect::<Vec<_>>());

        let mut bytes = std::fs::read(&path).unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        std::fs::write(&path, &bytes).unwrap();
        let _ = read_journal(&path);
    }
}
