//! Arrow contact batches to SendGrid JSON bodies: contacts per second on one core.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipeline_sink::encoder::BodyEncoder;
use pipeline_sink::{ContactField, FieldKind};

const ROWS: usize = 8192;

fn batch() -> RecordBatch {
    let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new((0..ROWS).map(|i| Some(f(i))).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|i| format!("customer{i}@example.com")),
        text(&|i| {
            if i % 3 == 0 {
                "Zoë".into()
            } else {
                "Ada".into()
            }
        }),
        text(&|_| "Lovelace".into()),
        text(&|_| "San Francisco".into()),
        text(&|_| "US".into()),
        text(&|i| format!("{:05}", i % 100_000)),
        Arc::new(
            (0..ROWS)
                .map(|i| Some(i as f64 * 1.5))
                .collect::<Float64Array>(),
        ),
        Arc::new(
            (0..ROWS)
                .map(|i| (i % 7 != 0).then_some(i as i64))
                .collect::<Int64Array>(),
        ),
    ];
    let names = fields().into_iter().map(|f| f.name);
    RecordBatch::try_from_iter(names.zip(columns)).unwrap()
}

/// Six reserved fields, then two custom fields by id.
fn fields() -> Vec<ContactField> {
    const RESERVED: [&str; 6] = [
        "email",
        "first_name",
        "last_name",
        "city",
        "country",
        "postal_code",
    ];
    let field = |name: &str, kind| ContactField {
        name: name.into(),
        kind,
    };
    RESERVED
        .into_iter()
        .map(|n| field(n, FieldKind::Reserved))
        .chain(["e1_N", "e2_N"].map(|n| field(n, FieldKind::Custom)))
        .collect()
}

fn encode(c: &mut Criterion) {
    let batch = batch();
    let lists = vec!["0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11".to_string()];
    let mut group = c.benchmark_group("encoder");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("contacts_to_json", |b| {
        b.iter(|| {
            let mut encoder = BodyEncoder::new(&lists, fields());
            let mut bytes = 0;
            encoder
                .push_batch(&batch, |body| {
                    bytes += body.bytes.len();
                    Ok(())
                })
                .unwrap();
            bytes + encoder.finish().map_or(0, |b| b.bytes.len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
